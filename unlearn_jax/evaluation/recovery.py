"""Training-free recovery attacks (OPC, docs/math.md §3.2): FM, HR, HR with labels and HeadSwap.

All read the unlearned features z_u = f_{θ_u}(x) and are fitted in closed form (ridge regression)
on a calibration set S_cal of kept-class held-out images (``splits.calibration``):

- FM (feature map): W* = ridge([Z_u, 1] → Z_o), predict argmax g_{θ_o}([z_u, 1] W*).
- HR (head refit, default ``hr_target="probs"``): V* = ridge([Z_u, 1] → P_o), P_o = softmax of
  θ_o's logits, predict argmax [z_u, 1] V*. With ``hr_target="logits"`` the targets are θ_o's
  logits S_o = Z_o H + b; ridge is linear in its targets, so that V* = W* H + ridge([Z_u, 1] → 1) bᵀ
  and it predicts what FM predicts (exactly at γ = 0). Only the softmax makes HR a different attack.
- HR with labels: V* = ridge([Z_u, 1] → one-hot y), class-balanced, on S_cal plus K labelled
  shots of each forgotten class drawn from D_f (the only variant that sees forget images).
- HeadSwap: predict argmax g_{θ_o}(z_u).

S_cal holds no forget-class image, so FM reaches a forget class only through θ_o's head and HR
(probabilities) only through θ_o's small forget-class probabilities on kept images: for θ_u = θ_o
HR recovers 0 % of D_f on digits (a confident θ_o) and 48–85 % on Fashion-MNIST. If f_{θ_u} maps
every forget image to one point (OPC's deep forgetting, docs/math.md §3.1), every recovered
classifier outputs one class for all of them.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import accuracy_from_logits, model_outputs
from unlearn_jax.models import Model, apply_head, final_layer

ATTACKS = ("fm", "hr", "hr_labels", "head_swap")
HR_TARGETS = ("probs", "logits")
GAMMA_SCALE = 1e-3
LABEL_SHOTS = 5


def _affine(inputs: jax.Array) -> jax.Array:
  """Ẑ = [Z, 1]: [n, d] → [n, d + 1]."""
  return jnp.concatenate([inputs, jnp.ones((inputs.shape[0], 1), inputs.dtype)], axis=1)


def ridge_fit(inputs: jax.Array, targets: jax.Array, *, gamma_scale: float = GAMMA_SCALE,
              weights: jax.Array | None = None) -> jax.Array:
  """V* = argmin_V ‖Ω^½(Ẑ V − T)‖²_F + γ‖V‖²_F = (ẐᵀΩẐ + γI)⁻¹ ẐᵀΩT, Ẑ = [Z, 1] (math.md §3.2).

  Ω = diag(weights) (default I). γ = gamma_scale · tr(ẐᵀΩẐ) / (d + 1), so the regulariser scales
  with the features and is > 0 even for all-zero features (the ones column). Solved by Cholesky
  at full matmul precision.

  Args:
    inputs: Z [n, d] (unlearned features of the calibration set).
    targets: T [n, m] (original features, probabilities, logits or one-hot labels).
    gamma_scale: relative ridge strength.
    weights: optional [n] non-negative example weights ω_i.

  Returns:
    V* [d + 1, m]; its last row is the intercept.

  >>> z = jnp.array([[0.0], [1.0], [2.0]])
  >>> ridge_fit(z, 3 * z + 1, gamma_scale=0.0).round(4)  # t = 3z + 1
  Array([[3.],
         [1.]], dtype=float32)
  """
  z = _affine(inputs)
  weighted = z if weights is None else z * jnp.asarray(weights, z.dtype)[:, None]
  gram = jnp.matmul(weighted.T, z, precision="highest")
  gamma = gamma_scale * jnp.trace(gram) / gram.shape[0]
  eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
  return jax.scipy.linalg.solve(gram + gamma * eye,
                                jnp.matmul(weighted.T, targets, precision="highest"),
                                assume_a="pos")


def ridge_predict(weights: jax.Array, inputs: jax.Array) -> jax.Array:
  """[Z, 1] V: inputs [n, d], weights [d + 1, m] → [n, m]."""
  return jnp.matmul(_affine(inputs), weights, precision="highest")


def hr_targets(original_logits: jax.Array, hr_target: str = "probs") -> jax.Array:
  """HR's regression targets on S_cal: P_o = softmax(S_o) ("probs") or S_o itself ("logits").

  Raises:
    ValueError: an unknown ``hr_target``.

  >>> hr_targets(jnp.log(jnp.array([[1.0, 3.0]]))).round(4)
  Array([[0.25, 0.75]], dtype=float32)
  """
  if hr_target not in HR_TARGETS:
    raise ValueError(f"hr_target: {hr_target!r}; allowed: {', '.join(HR_TARGETS)}.")
  return jax.nn.softmax(original_logits, axis=-1) if hr_target == "probs" else original_logits


def fit_recovery(unlearned_features: jax.Array, original_features: jax.Array,
                 original_logits: jax.Array, *, gamma_scale: float = GAMMA_SCALE,
                 hr_target: str = "probs") -> dict:
  """FM's W* = ridge([Z_u, 1] → Z_o), HR's V* = ridge([Z_u, 1] → P_o) on S_cal (math.md §3.2).

  Args:
    unlearned_features: Z_u [n, d_u] = f_{θ_u}(S_cal).
    original_features: Z_o [n, d] = f_{θ_o}(S_cal).
    original_logits: S_o [n, C] = h_{θ_o}(S_cal).
    gamma_scale: relative ridge strength (see :func:`ridge_fit`).
    hr_target: HR's targets, "probs" (P_o = softmax S_o) or "logits" (S_o; equal to FM).

  Returns:
    {"fm": W* [d_u + 1, d], "hr": V* [d_u + 1, C]}.

  Raises:
    ValueError: an unknown ``hr_target``.
  """
  return {"fm": ridge_fit(unlearned_features, original_features, gamma_scale=gamma_scale),
          "hr": ridge_fit(unlearned_features, hr_targets(original_logits, hr_target),
                          gamma_scale=gamma_scale)}


def class_balance(labels: jax.Array, num_classes: int) -> jax.Array:
  """ω_i = n / (C' n_{y_i}): every class present weighs the same in total, and mean ω = 1
  (n examples, n_c of class c, C' classes present).

  >>> class_balance(jnp.array([0, 0, 0, 1]), 2)
  Array([0.6666667, 0.6666667, 0.6666667, 2.       ], dtype=float32)
  """
  counts = jnp.zeros(num_classes, jnp.float32).at[labels].add(1.0)
  present = jnp.sum(counts > 0)
  return labels.shape[0] / (present * counts[labels])


def fit_label_head(features: jax.Array, labels: jax.Array, num_classes: int, *,
                   gamma_scale: float = GAMMA_SCALE, balanced: bool = True) -> jax.Array:
  """HR with labels: V* = ridge([Z, 1] → one-hot(y)) with weights :func:`class_balance`
  (``balanced``) or 1, so that K shots of a forgotten class are not drowned by S_cal (math.md §3.2).

  Args:
    features: Z [n, d] of θ_u on S_cal and the labelled forget shots.
    labels: int [n] their labels.
    num_classes: C.
    gamma_scale: relative ridge strength (see :func:`ridge_fit`).
    balanced: weigh every class present equally.

  Returns:
    V* [d + 1, C]; predict argmax [z, 1] V*.
  """
  weights = class_balance(labels, num_classes) if balanced else None
  return ridge_fit(features, jax.nn.one_hot(labels, num_classes, dtype=features.dtype),
                   gamma_scale=gamma_scale, weights=weights)


def draw_label_shots(labels: np.ndarray, classes, k: int, rng: np.random.Generator) -> np.ndarray:
  """Positions of K distinct examples of each class of ``classes`` in ``labels``: int [n·K].

  Raises:
    ValueError: K < 1, or K larger than a class's examples.
  """
  if k < 1:
    raise ValueError(f"label_shots: {k}; must be ≥ 1.")
  positions = []
  for c in classes:
    members = np.flatnonzero(labels == c)
    if k > len(members):
      raise ValueError(f"label_shots: K={k} exceeds the {len(members)} images of class {c} in "
                       f"D_f; allowed K ≤ {len(members)}.")
    positions.append(rng.choice(members, size=k, replace=False))
  return np.concatenate(positions)


def recovered_logits(fits: dict, original_params, unlearned_features: jax.Array) -> dict:
  """Scores of the recovered classifiers on unlearned features z_u (docs/math.md §3.2); each
  predicts their argmax.

  FM: g_{θ_o}([z_u, 1] W*); HR: [z_u, 1] V* (regressed probabilities, or logits); HR with labels
  (if ``fits`` has "hr_labels"): [z_u, 1] V*; HeadSwap: g_{θ_o}(z_u).

  Args:
    fits: :func:`fit_recovery`'s {"fm", "hr"}, optionally with "hr_labels"
      (:func:`fit_label_head`).
    original_params: θ_o (its ``head`` is read).
    unlearned_features: [N, d_u]; HeadSwap needs d_u = d.

  Returns:
    {"fm", "hr", ["hr_labels",] "head_swap"} → scores [N, C].
  """
  final_layer(original_params, field="original_params")
  out = {"fm": apply_head(original_params, ridge_predict(fits["fm"], unlearned_features)),
         "hr": ridge_predict(fits["hr"], unlearned_features)}
  if "hr_labels" in fits:
    out["hr_labels"] = ridge_predict(fits["hr_labels"], unlearned_features)
  return out | {"head_swap": apply_head(original_params, unlearned_features)}


@functools.partial(jax.jit, static_argnames=("gamma_scale", "hr_target", "num_classes",
                                             "balanced"))
def _recover(calibration, labelled, original_head, eval_features, *, gamma_scale, hr_target,
             num_classes, balanced):
  fits = fit_recovery(*calibration, gamma_scale=gamma_scale, hr_target=hr_target)
  fits["hr_labels"] = fit_label_head(*labelled, num_classes, gamma_scale=gamma_scale,
                                     balanced=balanced)
  head = {"head": original_head}
  return {name: recovered_logits(fits, head, z) for name, z in eval_features.items()}


def _check_architectures(model: Model, original_model: Model, params, original_params) -> None:
  kernel, _ = final_layer(params, field="params")
  original_kernel, _ = final_layer(original_params, field="original")
  if (model.feature_dim, model.num_classes) != (original_model.feature_dim,
                                                original_model.num_classes):
    raise ValueError(
        f"original_model: features × classes {original_model.feature_dim} × "
        f"{original_model.num_classes} differ from the unlearned model's {model.feature_dim} × "
        f"{model.num_classes}; recovery needs the same feature dimension and classes.")
  if kernel.shape != original_kernel.shape:
    raise ValueError(f"original: head kernel {tuple(original_kernel.shape)} differs from the "
                     f"unlearned head's {tuple(kernel.shape)}; the architectures do not match.")


def _check_splits(splits: Splits) -> None:
  if len(splits.forget) == 0:
    raise ValueError("splits.forget: the forget set D_f is empty.")
  if len(splits.calibration) == 0:
    raise ValueError("splits.calibration: empty; make the splits with calibration_fraction > 0.")
  leaked = sorted(set(np.unique(splits.calibration.labels)) & set(splits.forget_classes))
  if leaked:
    raise ValueError(f"splits.calibration: holds forgotten classes {leaked}; S_cal must have "
                     "kept classes only.")


def recovery_attack(model: Model, params, model_state, splits: Splits, *, original,
                    original_model: Model | None = None, gamma_scale: float = GAMMA_SCALE,
                    hr_target: str = "probs", label_shots: int = LABEL_SHOTS,
                    label_balanced: bool = True, seed: int = 0, batch_size: int = 512,
                    mesh=None) -> dict:
  """FM, HR, HR with labels and HeadSwap against θ_u: recovered accuracy on D_f, D_t^f and
  held-out D_t^r (docs/math.md §3.2).

  Fits on ``splits.calibration`` (half of D_t^r by default) and reports retain accuracy on
  ``splits.test_heldout`` (the rest of D_t^r), so no scored kept-class image was used for
  fitting. HR with labels also fits on ``label_shots`` images of each forgotten class drawn from
  D_f by ``host_rng(seed, "hr_label_shots", K)``; they stay in its D_f score (as PRA's shots do),
  D_t^f holds none of them.

  Args:
    model: the unlearned model's architecture; params, model_state: θ_u.
    splits: the unlearning split; its calibration set must hold kept classes only.
    original: (params, model_state) of θ_o.
    original_model: θ_o's architecture (default: ``model``).
    gamma_scale: relative ridge strength (see :func:`ridge_fit`).
    hr_target: HR's targets, "probs" or "logits" (see :func:`fit_recovery`).
    label_shots: K, labelled D_f images per forgotten class for HR with labels.
    label_balanced: class-balanced weights for HR with labels (:func:`fit_label_head`).
    seed: the shots' seed.
    batch_size, mesh: for the forward passes (:func:`model_outputs`).

  Returns:
    {"unlearned": {"forget", "test_forget", "retain"} accuracies in % of θ_u itself, "fm", "hr",
    "hr_labels", "head_swap": the same for each recovered classifier, "gamma_scale",
    "hr_target", "calibration_size", "label_shots": K, "label_shot_positions": into D_f}.
    An empty D_t^f gives NaN.

  Raises:
    ValueError: mismatched architectures (feature dimension or classes), a ``params`` without
      ``head``, an empty D_f or calibration set, forgotten classes in the calibration set, an
      unknown ``hr_target`` or K larger than a forgotten class's D_f images.
  """
  original_model = original_model or model
  original_params, original_state = original
  _check_architectures(model, original_model, params, original_params)
  _check_splits(splits)
  hr_targets(jnp.zeros((1, 1)), hr_target)  # validates it before any forward pass
  classes = sorted(set(np.unique(splits.forget.labels).tolist()))
  positions = draw_label_shots(splits.forget.labels, classes, label_shots,
                               seeding.host_rng(seed, "hr_label_shots", label_shots))

  def outputs(m, p, s, data):
    return model_outputs(m, p, s, data, batch_size=batch_size, mesh=mesh)

  z_u_cal, _ = outputs(model, params, model_state, splits.calibration)
  z_o_cal, logits_o_cal = outputs(original_model, original_params, original_state,
                                  splits.calibration)
  data = {"forget": splits.forget, "test_forget": splits.test_forget,
          "retain": splits.test_heldout}
  unlearned = {name: outputs(model, params, model_state, d) for name, d in data.items()}
  labelled = (np.concatenate([z_u_cal, unlearned["forget"][0][positions]]),
              np.concatenate([splits.calibration.labels, splits.forget.labels[positions]]))
  logits = _recover((z_u_cal, z_o_cal, logits_o_cal), labelled, dict(original_params["head"]),
                    {name: z for name, (z, _) in unlearned.items()}, gamma_scale=gamma_scale,
                    hr_target=hr_target, num_classes=model.num_classes,
                    balanced=bool(label_balanced))
  result = {"unlearned": {name: accuracy_from_logits(unlearned[name][1], d.labels)
                          for name, d in data.items()}}
  for attack in ATTACKS:
    result[attack] = {name: accuracy_from_logits(np.asarray(logits[name][attack]), d.labels)
                      for name, d in data.items()}
  return {**result, "gamma_scale": float(gamma_scale), "hr_target": hr_target,
          "calibration_size": int(len(splits.calibration)), "label_shots": int(label_shots),
          "label_shot_positions": positions.tolist()}


@dataclasses.dataclass(frozen=True)
class RecoverySettings(registry.Settings):
  """HR's targets (``hr_target``: "probs", or "logits", which equals FM) and HR with labels'
  K shots per forgotten class (``label_shots``) and class balance (``label_balanced``)."""

  hr_target: str = "probs"
  label_shots: int = LABEL_SHOTS
  label_balanced: bool = True

  def __post_init__(self):
    if self.hr_target not in HR_TARGETS:
      raise ValueError(f"config.evaluation.recovery.hr_target: {self.hr_target!r}; allowed: "
                       f"{', '.join(HR_TARGETS)}.")


def _evaluate(model: Model, params, model_state, context, settings: RecoverySettings, *,
              seed: int) -> tuple[dict, dict]:
  """FM, HR, HR with labels and HeadSwap accuracy on D_f against the context's θ_o; details
  "recovery"."""
  rec = recovery_attack(model, params, model_state, context.splits, original=context.original,
                        hr_target=settings.hr_target, label_shots=settings.label_shots,
                        label_balanced=settings.label_balanced, seed=seed)
  return ({"FM/forget": rec["fm"]["forget"], "HR/forget": rec["hr"]["forget"],
           "HR_labels/forget": rec["hr_labels"]["forget"],
           "HeadSwap/forget": rec["head_swap"]["forget"]}, {"recovery": rec})


def plot_recovery(models: dict, path) -> None:
  """Bars of Acc(D_f) unlearned, after FM, HR and HR with labels, per model that has FM."""
  from matplotlib.figure import Figure

  rows = {n: m["metrics"] for n, m in models.items() if m["metrics"].get("FM/forget") is not None}
  if not rows:
    return

  def value(m, k):
    v = m.get(k)
    return v["mean"] if isinstance(v, dict) else (v or 0.0)

  x = np.arange(len(rows))
  bars = (("acc/forget", "unlearned"), ("FM/forget", "FM"), ("HR/forget", "HR"),
          ("HR_labels/forget", "HR with labels"))
  width = 0.8 / len(bars)
  fig = Figure(figsize=(max(6, 0.7 * len(rows)), 3.6))
  ax = fig.subplots()
  for i, (key, label) in enumerate(bars):
    ax.bar(x + (i - (len(bars) - 1) / 2) * width, [value(m, key) for m in rows.values()], width,
           label=label)
  ax.set_xticks(x, list(rows), rotation=45, ha="right")
  ax.set_ylabel("forget accuracy on D_f (%)")
  ax.set_title("Training-free recovery")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


METRIC = registry.register(registry.Metric(
    "recovery", _evaluate, RecoverySettings,
    columns=(("FM", "FM/forget", ".1f"), ("HR", "HR/forget", ".1f"),
             ("HR lab.", "HR_labels/forget", ".1f")),
    needs=("classes", "original"), plot=("recovery.png", plot_recovery)))


__all__ = ["ATTACKS", "GAMMA_SCALE", "HR_TARGETS", "LABEL_SHOTS", "METRIC", "RecoverySettings",
           "class_balance", "draw_label_shots", "fit_label_head", "fit_recovery", "hr_targets",
           "plot_recovery", "recovered_logits", "recovery_attack", "ridge_fit", "ridge_predict"]
