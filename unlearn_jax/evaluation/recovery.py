"""Training-free recovery attacks (OPC, docs/math.md §3.2): FM, HR and HeadSwap.

All three read the unlearned features z_u = f_{θ_u}(x) and the frozen original model, never a
forget image at fitting time: FM and HR are ridge regressions fitted in closed form on a
calibration set S_cal of kept-class held-out images (``splits.calibration``).

- FM (feature map): W* = ridge([Z_u, 1] → Z_o), predict argmax g_{θ_o}([z_u, 1] W*).
- HR (head refit): V* = ridge([Z_u, 1] → S_o), S_o the original logits, predict argmax [z_u, 1] V*.
- HeadSwap: predict argmax g_{θ_o}(z_u).

If f_{θ_u} maps every forget image to one point (OPC's deep forgetting, docs/math.md §3.1), every
recovered classifier outputs one class for all of them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import accuracy_from_logits, model_outputs
from unlearn_jax.models import Model, apply_head, final_layer

ATTACKS = ("fm", "hr", "head_swap")
GAMMA_SCALE = 1e-3


def _affine(inputs: jax.Array) -> jax.Array:
  """Ẑ = [Z, 1]: [n, d] → [n, d + 1]."""
  return jnp.concatenate([inputs, jnp.ones((inputs.shape[0], 1), inputs.dtype)], axis=1)


def ridge_fit(inputs: jax.Array, targets: jax.Array, *,
              gamma_scale: float = GAMMA_SCALE) -> jax.Array:
  """V* = argmin_V ‖Ẑ V − T‖²_F + γ‖V‖²_F = (ẐᵀẐ + γI)⁻¹ ẐᵀT, Ẑ = [Z, 1] (docs/math.md §3.2).

  γ = gamma_scale · tr(ẐᵀẐ) / (d + 1), so the regulariser scales with the features and is > 0
  even for all-zero features (the ones column). Solved by Cholesky at full matmul precision.

  Args:
    inputs: Z [n, d] (unlearned features of the calibration set).
    targets: T [n, m] (original features or logits).
    gamma_scale: relative ridge strength.

  Returns:
    V* [d + 1, m]; its last row is the intercept.

  >>> z = jnp.array([[0.0], [1.0], [2.0]])
  >>> ridge_fit(z, 3 * z + 1, gamma_scale=0.0).round(4)  # t = 3z + 1
  Array([[3.],
         [1.]], dtype=float32)
  """
  z = _affine(inputs)
  gram = jnp.matmul(z.T, z, precision="highest")
  gamma = gamma_scale * jnp.trace(gram) / gram.shape[0]
  eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
  return jax.scipy.linalg.solve(gram + gamma * eye, jnp.matmul(z.T, targets, precision="highest"),
                                assume_a="pos")


def ridge_predict(weights: jax.Array, inputs: jax.Array) -> jax.Array:
  """[Z, 1] V: inputs [n, d], weights [d + 1, m] → [n, m]."""
  return jnp.matmul(_affine(inputs), weights, precision="highest")


def fit_recovery(unlearned_features: jax.Array, original_features: jax.Array,
                 original_logits: jax.Array, *, gamma_scale: float = GAMMA_SCALE) -> dict:
  """FM's W* = ridge([Z_u, 1] → Z_o), HR's V* = ridge([Z_u, 1] → S_o) on S_cal (math.md §3.2).

  Args:
    unlearned_features: Z_u [n, d_u] = f_{θ_u}(S_cal).
    original_features: Z_o [n, d] = f_{θ_o}(S_cal).
    original_logits: S_o [n, C] = h_{θ_o}(S_cal).
    gamma_scale: relative ridge strength (see :func:`ridge_fit`).

  Returns:
    {"fm": W* [d_u + 1, d], "hr": V* [d_u + 1, C]}.
  """
  return {"fm": ridge_fit(unlearned_features, original_features, gamma_scale=gamma_scale),
          "hr": ridge_fit(unlearned_features, original_logits, gamma_scale=gamma_scale)}


def recovered_logits(fits: dict, original_params, unlearned_features: jax.Array) -> dict:
  """Logits of the three recovered classifiers on unlearned features z_u (docs/math.md §3.2).

  FM: g_{θ_o}([z_u, 1] W*); HR: [z_u, 1] V*; HeadSwap: g_{θ_o}(z_u).

  Args:
    fits: :func:`fit_recovery`'s {"fm", "hr"}.
    original_params: θ_o (its ``head`` is read).
    unlearned_features: [N, d_u]; HeadSwap needs d_u = d.

  Returns:
    {"fm", "hr", "head_swap"} → logits [N, C].
  """
  final_layer(original_params, field="original_params")
  return {"fm": apply_head(original_params, ridge_predict(fits["fm"], unlearned_features)),
          "hr": ridge_predict(fits["hr"], unlearned_features),
          "head_swap": apply_head(original_params, unlearned_features)}


@functools.partial(jax.jit, static_argnames="gamma_scale")
def _recover(calibration, original_head, eval_features, *, gamma_scale):
  fits = fit_recovery(*calibration, gamma_scale=gamma_scale)
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
                    batch_size: int = 512, mesh=None) -> dict:
  """FM, HR and HeadSwap against θ_u: recovered accuracy on D_f, D_t^f and held-out D_t^r.

  Fits on ``splits.calibration`` (half of D_t^r by default) and reports retain accuracy on
  ``splits.test_heldout`` (the rest of D_t^r), so no scored image was used for fitting.

  Args:
    model: the unlearned model's architecture; params, model_state: θ_u.
    splits: the unlearning split; its calibration set must hold kept classes only.
    original: (params, model_state) of θ_o.
    original_model: θ_o's architecture (default: ``model``).
    gamma_scale: relative ridge strength (see :func:`ridge_fit`).
    batch_size, mesh: for the forward passes (:func:`model_outputs`).

  Returns:
    {"unlearned": {"forget", "test_forget", "retain"} accuracies in % of θ_u itself, "fm", "hr",
    "head_swap": the same for each recovered classifier, "gamma_scale", "calibration_size"}.
    An empty D_t^f gives NaN.

  Raises:
    ValueError: mismatched architectures (feature dimension or classes), a ``params`` without
      ``head``, an empty D_f or calibration set, or forgotten classes in the calibration set.
  """
  original_model = original_model or model
  original_params, original_state = original
  _check_architectures(model, original_model, params, original_params)
  _check_splits(splits)

  def outputs(m, p, s, data):
    return model_outputs(m, p, s, data, batch_size=batch_size, mesh=mesh)

  z_u_cal, _ = outputs(model, params, model_state, splits.calibration)
  z_o_cal, logits_o_cal = outputs(original_model, original_params, original_state,
                                  splits.calibration)
  data = {"forget": splits.forget, "test_forget": splits.test_forget,
          "retain": splits.test_heldout}
  unlearned = {name: outputs(model, params, model_state, d) for name, d in data.items()}
  logits = _recover((z_u_cal, z_o_cal, logits_o_cal), dict(original_params["head"]),
                    {name: z for name, (z, _) in unlearned.items()}, gamma_scale=gamma_scale)
  result = {"unlearned": {name: accuracy_from_logits(unlearned[name][1], d.labels)
                          for name, d in data.items()}}
  for attack in ATTACKS:
    result[attack] = {name: accuracy_from_logits(np.asarray(logits[name][attack]), d.labels)
                      for name, d in data.items()}
  return {**result, "gamma_scale": float(gamma_scale),
          "calibration_size": int(len(splits.calibration))}


def _evaluate(model: Model, params, model_state, context, settings: registry.Settings, *,
              seed: int) -> tuple[dict, dict]:
  """FM, HR and HeadSwap accuracy on D_f against the context's θ_o; details "recovery"."""
  rec = recovery_attack(model, params, model_state, context.splits, original=context.original)
  return ({"FM/forget": rec["fm"]["forget"], "HR/forget": rec["hr"]["forget"],
           "HeadSwap/forget": rec["head_swap"]["forget"]}, {"recovery": rec})


def plot_recovery(models: dict, path, plt) -> None:
  """Bars of Acc(D_f) unlearned, after FM and after HR, per model that has FM."""
  rows = {n: m["metrics"] for n, m in models.items() if m["metrics"].get("FM/forget") is not None}
  if not rows:
    return

  def value(m, k):
    v = m.get(k)
    return v["mean"] if isinstance(v, dict) else (v or 0.0)

  x = np.arange(len(rows))
  fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows)), 3.6))
  for offset, key, label in ((-0.27, "acc/forget", "unlearned"), (0.0, "FM/forget", "FM"),
                             (0.27, "HR/forget", "HR")):
    ax.bar(x + offset, [value(m, key) for m in rows.values()], 0.27, label=label)
  ax.set_xticks(x, list(rows), rotation=45, ha="right")
  ax.set_ylabel("forget accuracy on D_f (%)")
  ax.set_title("Training-free recovery")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


METRIC = registry.register(registry.Metric(
    "recovery", _evaluate, columns=(("FM", "FM/forget", ".1f"), ("HR", "HR/forget", ".1f")),
    needs=("classes", "original"), plot=("recovery.png", plot_recovery)))


__all__ = ["ATTACKS", "METRIC", "fit_recovery", "plot_recovery", "recovered_logits",
           "recovery_attack", "ridge_fit", "ridge_predict"]
