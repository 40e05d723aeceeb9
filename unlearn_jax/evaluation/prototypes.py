"""Prototypical Relearning Attack (PRA; Spotter, docs/math.md §2.4): a closed-form edit of the
final layer from K labelled images per forgotten class, with no gradient step.

For each forgotten class c the attacker averages the unlearned features of K shots, normalises
the mean to the prototype p̂_c and blends a prototype classifier into column c of the head. The
grid runner sweeps K, shot draws, α and both target rules with one compiled program, called once
per (source, K): features are computed once, every edit and accuracy is linear algebra on them.

The table reports two settings: the strongest attack of the grid (``PRA/forget``, with the α, K
and rule it used) and the Spotter reference code's fixed setting (``PRA/ref``): the cosine rule,
K = 5 shots from D_f, α = 0.5 for the original, 1.0 for Retrain, 0.8 for Spotter (its notebook's
values) and, as our choice, Spotter's 0.8 for every other method (``PRASettings.ref_alpha``,
``ref_alphas``). The reference setting is a point of the default grid, so it costs nothing extra.

Two numbers explain a fixed-α result (docs/math.md §2.4): the norms of the head's rows and how
concentrated the forget features are (:mod:`~unlearn_jax.evaluation.pra_geometry`).
"""

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import pra_geometry, registry
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.models import Model, apply_head, final_layer
from unlearn_jax.objectives.losses import safe_normalize

MODES = ("cosine", "l2")
# α in steps of 0.05: on ReLU features the forget class flips from losing to winning every image
# within a narrow α window (measured on digits), which the coarse grid of docs/math.md §2.4
# (0.2, 0.4, …, 1.0) can step over; pass ``alphas=`` for that grid.
ALPHAS = tuple(round(0.05 * i, 2) for i in range(1, 21))
SHOTS = (1, 5, 10)
SETS = ("forget", "test_forget", "test_retain")
# The reference code's fixed setting: K shots from D_f, the cosine rule, α per model (others:
# REF_ALPHA, Spotter's).
REF_SHOTS = 5
REF_ALPHAS = (("original", 0.5), ("retrain", 1.0), ("spotter", 0.8))
REF_ALPHA = 0.8
RULE_NAMES = {"cosine": "cos", "l2": "L2"}


def prototype(shot_features: jax.Array) -> jax.Array:
  """p̂ = p / ‖p‖ with p = (1/K) Σ_k z_k (docs/math.md §2.4 step 2).

  Args:
    shot_features: [..., K, d] unlearned features z_k of K shots of one class.

  Returns:
    [..., d] unit prototypes; a zero mean gives the zero vector (ε-guarded normaliser).

  >>> prototype(jnp.array([[3.0, 0.0], [5.0, 0.0]]))
  Array([1., 0.], dtype=float32)
  """
  return safe_normalize(jnp.mean(shot_features, axis=-2))


def rule_targets(prototypes: jax.Array, l2) -> tuple[jax.Array, jax.Array]:
  """(w*, b*) per prototype: cosine rule (p̂, 0), or L2 rule (2p̂, −‖p̂‖²) where ``l2`` (a bool,
  possibly traced) is true."""
  w = jnp.where(l2, 2.0, 1.0) * prototypes
  return w, jnp.where(l2, -jnp.sum(prototypes * prototypes, axis=-1), 0.0)


def _blend(params, target_w, target_b, classes, alpha):
  kernel, bias = (jnp.asarray(a) for a in final_layer(params))
  columns = alpha * target_w.T + (1.0 - alpha) * kernel[:, classes]
  biases = alpha * target_b + (1.0 - alpha) * bias[classes]
  head = {**params["head"], "kernel": kernel.at[:, classes].set(columns),
          "bias": bias.at[classes].set(biases.astype(bias.dtype))}
  return {**params, "head": head}


def edit_head(params, prototypes: jax.Array, classes: jax.Array, alpha: jax.Array, *,
              mode: str = "cosine"):
  """W[:, c] ← α w*_c + (1 − α) W[:, c], b_c ← α b*_c + (1 − α) b_c per class c (math.md §2.4).

  Cosine rule (w*, b*) = (p̂_c, 0); L2 rule (w*, b*) = (2 p̂_c, −‖p̂_c‖²), so that
  s_c = ‖z‖² − ‖z − p̂_c‖² (nearest prototype). Other classes and layers are untouched; α = 0
  returns the head bit for bit. Pure and jit/vmap-able over prototypes and α.

  Args:
    params: model parameters with ``head`` {kernel [d, C], bias [C]} (Flax layout: class c is
      ``kernel[:, c]``).
    prototypes: [n, d] prototypes p̂ of the n edited classes.
    classes: int [n] class ids (distinct).
    alpha: scalar blend α ∈ [0, 1].
    mode: "cosine" or "l2".

  Returns:
    New parameters (a dict) with the edited head.

  Raises:
    ValueError: unknown ``mode`` or no ``head``.
  """
  if mode not in MODES:
    raise ValueError(f"mode: {mode!r}; allowed: {', '.join(MODES)}.")
  return _blend(params, *rule_targets(prototypes, mode == "l2"), classes, alpha)


@jax.jit
def _grid_correct(head, shot_means, classes, l2, alphas, eval_sets):
  """Correct counts {set: [R, M, A]} over shot draws (the K-shot mean features [R, n, d], made
  unit prototypes here), rules (``l2`` bools [M]) and α [A]: one compiled program for every K
  and rule."""

  def correct(protos, is_l2, alpha):
    edited = _blend({"head": head}, *rule_targets(protos, is_l2), classes, alpha)
    return {name: jnp.sum(jnp.argmax(apply_head(edited, z), axis=-1) == y)
            for name, (z, y) in eval_sets.items()}

  over_alphas = jax.vmap(correct, in_axes=(None, None, 0))
  over_rules = jax.vmap(over_alphas, in_axes=(None, 0, None))
  protos = prototype(shot_means[..., None, :])  # the mean of one row is that row, exactly
  return jax.vmap(over_rules, in_axes=(0, None, None))(protos, l2, alphas)


def _accuracy(correct, n: int):
  return 100.0 * np.asarray(correct, np.float64) / n if n else np.full(np.shape(correct), np.nan)


def _draw_shots(labels: np.ndarray, classes: Sequence[int], k: int, num_draws: int,
                rng: np.random.Generator, source: str) -> np.ndarray:
  """Shot positions [R, n, K] into the source set: K distinct images of each class per draw."""
  members = [np.flatnonzero(labels == c) for c in classes]
  for c, m in zip(classes, members, strict=True):
    if k > len(m):
      raise ValueError(f"shots: K={k} exceeds the {len(m)} images of class {c} in {source}; "
                       f"allowed K ≤ {len(m)}.")
  return np.stack([np.stack([rng.choice(m, size=k, replace=False) for m in members])
                   for _ in range(num_draws)])


def _validate(sets, forget_classes, shots, num_draws, alphas, modes, shot_sources, select_on):
  if not forget_classes:
    raise ValueError("forget_classes: PRA attacks class unlearning; got no forgotten class.")
  missing = [s for s in SETS if s not in sets]
  if missing:
    raise ValueError(f"sets: missing {missing}; needs {', '.join(SETS)}.")
  if len(sets["forget"][1]) == 0:
    raise ValueError("sets.forget: the forget set D_f is empty.")
  if not shots or min(shots) < 1:
    raise ValueError(f"shots: {tuple(shots)}; each K must be ≥ 1.")
  if num_draws < 1:
    raise ValueError(f"num_draws: {num_draws}; must be ≥ 1.")
  if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):
    raise ValueError(f"alphas: {tuple(alphas)}; each α must lie in [0, 1].")
  if not modes or set(modes) - set(MODES):
    raise ValueError(f"modes: {tuple(modes)}; allowed: {', '.join(MODES)}.")
  if not shot_sources or set(shot_sources) - {"forget", "test_forget"}:
    raise ValueError(f"shot_sources: {tuple(shot_sources)}; allowed: forget, test_forget.")
  if select_on not in ("forget", "test_forget"):
    raise ValueError(f"select_on: {select_on!r}; allowed: forget, test_forget.")


def _strongest(settings: list[dict], select_on: str, max_kept_drop: float) -> dict | None:
  allowed = [s for s in settings if s["kept_drop"] <= max_kept_drop]
  return max(allowed, key=lambda s: s[select_on]) if allowed else None


def pra_grid(params, sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
             forget_classes: Sequence[int], *, seed: int, shots: Sequence[int] = SHOTS,
             num_draws: int = 5, alphas: Sequence[float] = ALPHAS,
             modes: Sequence[str] = MODES, shot_sources: Sequence[str] = ("forget",),
             select_on: str = "forget", max_kept_drop: float = 1.0) -> dict:
  """PRA over K × draws × α × rule on precomputed features; the strongest (docs/math.md §2.4).

  Strongest = the setting with the highest mean ``select_on`` accuracy over draws among those
  whose mean kept-class test accuracy Acc(D_t^r) drops by at most ``max_kept_drop`` points from
  the unedited head's.

  Args:
    params: unlearned parameters θ_u (only ``head`` is read).
    sets: {"forget", "test_forget", "test_retain"} → (features [N, d], labels int [N]) of θ_u.
    forget_classes: the forgotten classes 𝒞_f; every one's column is edited at once.
    seed: the draws for source s and K come from ``host_rng(seed, "pra_shots", s, K)``; the
      shots are recorded in the result.
    shots: the K values. num_draws: random shot draws per K. alphas: blends α.
    modes: target rules ("cosine", "l2"). shot_sources: where shots come from ("forget" = D_f,
      "test_forget" = D_t^f). select_on: the forget accuracy the strongest attack maximises.
    max_kept_drop: allowed drop of Acc(D_t^r) in points.

  Returns:
    {"base": accuracies of the unedited head, "settings": one dict per (source, K, mode, α) with
    mean and std over draws of each set's accuracy in % and "kept_drop", "strongest": the
    strongest setting (None if none keeps Acc(D_t^r)), "strongest_by_shots": {"source/K": ...},
    "shots": {"source/K": positions [R][n][K] into that source set}, "seed"}.

  Raises:
    ValueError: no forget class, empty D_f, K larger than a class's available shots, or an
      invalid option (the message names the field).
  """
  _validate(sets, forget_classes, shots, num_draws, alphas, modes, shot_sources, select_on)
  kernel, bias = final_layer(params)
  if sets["forget"][0].shape[-1] != kernel.shape[0]:
    raise ValueError(f"sets.forget: features of dimension {sets['forget'][0].shape[-1]} do not "
                     f"match the head's input dimension {kernel.shape[0]}.")
  head = {"kernel": kernel, "bias": bias}
  sizes = {name: len(sets[name][1]) for name in SETS}
  eval_sets = {name: (np.asarray(sets[name][0]), np.asarray(sets[name][1])) for name in SETS}
  classes = np.asarray(forget_classes, np.int32)
  l2 = np.asarray([mode == "l2" for mode in modes])
  # α = 0 first: the unedited head (bit for bit), so the base accuracies come from the same program.
  grid_alphas = np.asarray((0.0, *alphas), np.float32)
  settings, shot_record, by_shots, base = [], {}, {}, None
  for source in shot_sources:
    features, labels = sets[source]
    for k in shots:
      rng = seeding.host_rng(seed, "pra_shots", source, k)
      positions = _draw_shots(labels, forget_classes, k, num_draws, rng, source)
      shot_record[f"{source}/{k}"] = positions.tolist()
      # The K-shot means on the host, so that every K runs the same program.
      shot_means = np.asarray(features)[positions].mean(axis=-2)
      correct = _grid_correct(head, shot_means, classes, l2, grid_alphas, eval_sets)
      acc = {name: _accuracy(correct[name], sizes[name]) for name in SETS}  # [R, M, 1 + A]
      if base is None:
        base = {name: float(acc[name][0, 0, 0]) for name in SETS}
      group = []
      for m, mode in enumerate(modes):
        for j, alpha in enumerate(alphas, start=1):
          row = {"source": source, "shots": k, "mode": mode, "alpha": float(alpha)}
          for name in SETS:
            row[name] = float(np.mean(acc[name][:, m, j]))
            row[f"{name}_std"] = float(np.std(acc[name][:, m, j]))
          row["kept_drop"] = base["test_retain"] - row["test_retain"]
          group.append(row)
      by_shots[f"{source}/{k}"] = _strongest(group, select_on, max_kept_drop)
      settings.extend(group)
  return {"base": base, "settings": settings,
          "strongest": _strongest(settings, select_on, max_kept_drop),
          "strongest_by_shots": by_shots, "shots": shot_record, "seed": int(seed),
          "select_on": select_on, "max_kept_drop": float(max_kept_drop)}


def prototypical_relearning(model: Model, params, model_state, splits: Splits, *, seed: int,
                            batch_size: int = 512, mesh=None, **grid_options) -> dict:
  """The PRA grid on θ_u's features of D_f, D_t^f and D_t^r (docs/math.md §2.4).

  Args:
    model: the unlearned model's architecture; params, model_state: θ_u.
    splits: a class-unlearning split (``forget_classes`` non-empty).
    seed: the shot draws' seed (see :func:`pra_grid`).
    batch_size, mesh: for the one forward pass over each set (:func:`model_outputs`).
    **grid_options: shots, num_draws, alphas, modes, shot_sources, select_on, max_kept_drop.

  Returns:
    :func:`pra_grid`'s dict (shot positions index ``splits.forget`` / ``splits.test_forget``)
    and "geometry": θ_u's "head_norm_forget" and "head_norm_kept" (:func:`head_row_norms`)
    and "forget_cosine" (:func:`same_class_cosine` of its D_f features).

  Raises:
    ValueError: as :func:`pra_grid`, or ``params`` without a ``head``.
  """
  sets = _feature_sets(model, params, model_state, splits, batch_size=batch_size, mesh=mesh)
  return pra_grid(params, sets, splits.forget_classes, seed=seed, **grid_options) | {
      "geometry": pra_geometry.geometry(model, params, sets, splits.forget_classes)}


def _feature_sets(model: Model, params, model_state, splits: Splits, *, batch_size: int = 512,
                  mesh=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """θ_u's (features, labels) of D_f, D_t^f and D_t^r."""
  final_layer(params)
  if not splits.forget_classes:
    raise ValueError("splits.forget_classes: PRA attacks class unlearning; the split forgets "
                     "no whole class.")
  data = {"forget": splits.forget, "test_forget": splits.test_forget,
          "test_retain": splits.test_retain}
  return {name: (model_outputs(model, params, model_state, d, batch_size=batch_size,
                               mesh=mesh)[0], d.labels) for name, d in data.items()}


def pra_reference(params, sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  forget_classes: Sequence[int], *, seed: int, alpha: float,
                  shots: int = REF_SHOTS, num_draws: int = 5) -> dict:
  """PRA at one fixed setting, the reference code's: the cosine rule, ``shots`` shots from D_f
  and blend ``alpha``, with no selection and no kept-class constraint (docs/math.md §2.4).

  The shots are :func:`pra_grid`'s draws for (D_f, K) from ``seed``, so the value equals the
  grid's entry at (D_f, K, cosine, α).

  Returns:
    The setting's dict (mean and std over draws of each set's accuracy in %, "kept_drop").

  Raises:
    ValueError: as :func:`pra_grid`.
  """
  grid = pra_grid(params, sets, forget_classes, seed=seed, shots=(shots,), num_draws=num_draws,
                  alphas=(alpha,), modes=("cosine",))
  return grid["settings"][0]


@dataclasses.dataclass(frozen=True)
class PRASettings(registry.Settings):
  """The PRA grid's ``shots`` K and ``num_draws`` per K; the report's α curve at
  ``curve_shots``; the reference setting's K (``ref_shots``) and α: ``ref_alphas`` (model name →
  α pairs), else ``ref_alpha``. ``geometry``: show the head norms and the forget cosine as
  columns (the keys "head/norm_forget", "head/norm_kept", "cos/forget" are always reported)."""

  shots: tuple[int, ...] = SHOTS
  num_draws: int = 5
  curve_shots: int = 5
  ref_shots: int = REF_SHOTS
  ref_alpha: float = REF_ALPHA
  ref_alphas: tuple[tuple[str, float], ...] = REF_ALPHAS
  geometry: bool = False

  def __post_init__(self):
    pairs = tuple(self.ref_alphas)
    if not all(isinstance(p, tuple | list) and len(p) == 2 and isinstance(p[0], str)
               and isinstance(p[1], int | float) for p in pairs):
      raise ValueError(f"config.evaluation.pra.ref_alphas: {pairs!r}; expected (model name, α) "
                       "pairs, e.g. (('retrain', 1.0),).")
    for where, alpha in (("ref_alpha", self.ref_alpha), *(("ref_alphas", a) for _, a in pairs)):
      if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"config.evaluation.pra.{where}: α = {alpha} not in [0, 1].")


def reference_alpha(settings: PRASettings, name: str | None) -> float:
  """The reference setting's α for the model called ``name`` (``ref_alphas``, else
  ``ref_alpha``).

  >>> reference_alpha(PRASettings(), "retrain"), reference_alpha(PRASettings(), "ft")
  (1.0, 0.8)
  """
  return float(dict(settings.ref_alphas).get(name, settings.ref_alpha))


def strongest_at(setting: dict | None) -> str | None:
  """The strongest setting in words, e.g. "α=0.60 K=5 cos" (None for no setting).

  >>> strongest_at({"alpha": 0.6, "shots": 5, "mode": "l2"})
  'α=0.60 K=5 L2'
  """
  if setting is None:
    return None
  return f"α={setting['alpha']:.2f} K={setting['shots']} {RULE_NAMES[setting['mode']]}"


def pra_curve(settings: list[dict], shots: int) -> dict[str, list[list[float]]]:
  """Mean D_f accuracy of the PRA edit vs α, per rule, at ``shots`` shots from D_f:
  rule → sorted [α, Acc(D_f)] pairs."""
  curve: dict[str, list] = {}
  for s in settings:
    if s["source"] == "forget" and s["shots"] == shots:
      curve.setdefault(s["mode"], []).append((s["alpha"], s["forget"]))
  return {mode: [list(p) for p in sorted(points)] for mode, points in curve.items()}


def _find(settings: list[dict], shots: int, alpha: float) -> dict | None:
  """The grid's (D_f, K = ``shots``, cosine, α) entry, if the grid has it."""
  for s in settings:
    if (s["source"], s["shots"], s["mode"]) == ("forget", shots, "cosine") and abs(
        s["alpha"] - alpha) < 1e-6:
      return s
  return None


def _evaluate(model: Model, params, model_state, context, settings: PRASettings, *,
              seed: int, name: str | None = None) -> tuple[dict, dict]:
  """"PRA/forget": Acc(D_f) after the strongest edit (None if none qualifies) and the setting
  it used ("PRA/strongest_alpha", "_shots", "_l2" = 1.0 for the L2 rule, "_at" in words);
  "PRA/ref": Acc(D_f) at the reference setting for model ``name`` (its "PRA/ref_alpha" and
  "PRA/ref_kept_drop"); the head norms and forget cosine (:func:`_geometry`); details "pra"."""
  splits = context.splits
  sets = _feature_sets(model, params, model_state, splits)
  pra = pra_grid(params, sets, splits.forget_classes, seed=seed, shots=tuple(settings.shots),
                 num_draws=settings.num_draws)
  alpha = reference_alpha(settings, name)
  ref = _find(pra["settings"], settings.ref_shots, alpha)
  if ref is None:  # K or α off the grid: the same draws, one more (small) program
    ref = pra_reference(params, sets, splits.forget_classes, seed=seed, alpha=alpha,
                        shots=settings.ref_shots, num_draws=settings.num_draws)
  geometry = pra_geometry.geometry(model, params, sets, splits.forget_classes)
  strongest = pra["strongest"]
  found = strongest is not None
  metrics = {"PRA/forget": strongest["forget"] if found else None,
             "PRA/strongest_alpha": strongest["alpha"] if found else None,
             "PRA/strongest_shots": strongest["shots"] if found else None,
             "PRA/strongest_l2": float(strongest["mode"] == "l2") if found else None,
             "PRA/strongest_at": strongest_at(strongest),
             "PRA/ref": ref["forget"], "PRA/ref_alpha": alpha,
             "PRA/ref_kept_drop": ref["kept_drop"],
             "head/norm_forget": geometry["head_norm_forget"],
             "head/norm_kept": geometry["head_norm_kept"], "cos/forget": geometry["forget_cosine"]}
  return (metrics, {"pra": {"strongest": strongest, "reference": ref, "base": pra["base"],
                            "geometry": geometry,
                            "curve": pra_curve(pra["settings"], settings.curve_shots)}})


def _more_columns(settings: PRASettings) -> tuple[tuple[str, str, str], ...]:
  """The geometry columns, with ``geometry``."""
  return ((("‖w‖ forget", "head/norm_forget", ".3f"), ("‖w‖ kept", "head/norm_kept", ".3f"),
           ("cos D_f", "cos/forget", ".3f")) if settings.geometry else ())


def plot_pra(models: dict, path) -> None:
  """Forget accuracy vs α of every model's PRA curve, one panel per rule (``details["pra"]``)."""
  from matplotlib import colormaps
  from matplotlib.figure import Figure

  curves = {n: m["details"]["pra"]["curve"] for n, m in models.items()
            if "pra" in m.get("details", {})}
  if not curves:
    return
  fig = Figure(figsize=(10, 3.6))
  axes = fig.subplots(1, 2, sharey=True)
  for ax, mode in zip(axes, MODES, strict=True):
    ax.set_prop_cycle(color=colormaps["tab20"].colors)
    for name, curve in curves.items():
      if mode in curve:
        alpha, acc = np.asarray(curve[mode]).T
        ax.plot(alpha, acc, marker=".", label=name)
    ax.set_xlabel("α")
    ax.set_title(f"PRA ({mode} rule), 5 shots")
  axes[0].set_ylabel("forget accuracy after the edit (%)")
  axes[1].legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


METRIC = registry.register(registry.Metric(
    "pra", _evaluate, PRASettings,
    columns=(("PRA strongest", "PRA/forget", ".1f"), ("PRA strongest at", "PRA/strongest_at", "s"),
             ("PRA ref.", "PRA/ref", ".1f"), ("PRA ref. kept drop", "PRA/ref_kept_drop", ".1f")),
    needs=("classes",), plot=("pra_alpha.png", plot_pra), named=True,
    more_columns=_more_columns))


__all__ = ["ALPHAS", "METRIC", "MODES", "PRASettings", "REF_ALPHA", "REF_ALPHAS", "REF_SHOTS",
           "SHOTS", "edit_head", "final_layer", "plot_pra", "pra_curve", "pra_grid",
           "pra_reference", "prototype", "prototypical_relearning", "reference_alpha",
           "rule_targets", "strongest_at"]
