"""Representation-level forgetting: how close an unlearned model's features are to Retrain's.

Implements linear CKA (docs/math.md §3.4) and the retraining-consistency suite of §4: an alignment
map fitted on a neutral calibration set (orthogonal Procrustes, or ridge regression), the
per-sample residual e(x) = U(x)A − R(x), its relative size δ(x) = ‖e(x)‖/‖R(x)‖ and direction
1 − cos(U(x)A, R(x)), the scores RC_S = mean_S δ and the forget/retain asymmetry, the concentration
ρ_k of the residual along the reference's top-k principal directions (against the diffuse
baseline k/d), the residual's effective rank, subspace overlap and class-mean angles, and the
noise floor of every score between Retrain seeds. Feature matrices are [n, d] rows of the same
inputs; the pure functions are jit-able, :func:`retrain_consistency` returns a dict of floats.

Degenerate features (one-point contraction, OPC) are handled explicitly: CKA of a collapsed
feature matrix is 0, norms in denominators are ε-guarded, so no score is NaN.
"""

import functools
import itertools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.feature_geometry import (
  Alignment,
  align,
  check_rows,
  class_mean_angle,
  concentration,
  cosine_distance,
  effective_rank,
  fit_procrustes,
  fit_ridge,
  linear_cka,
  principal_directions,
  relative_residual,
  subspace_overlap,
)
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.models import Model

ALIGNMENTS = ("procrustes", "ridge")
SETS = ("forget", "retain", "test_forget", "test_retain", "calibration")


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _set_scores(u, r, alignment: Alignment, labels, *, k: int, num_classes: int | None):
  aligned = align(alignment, u)
  residual = aligned - r
  scores = {"rc": jnp.mean(relative_residual(aligned, r)),
            "cos": jnp.mean(cosine_distance(aligned, r)),
            "rho": concentration(residual, principal_directions(r, k)),
            "erank": effective_rank(residual),
            "overlap": subspace_overlap(aligned, r, k)}
  if labels is not None:
    scores["class_angle"] = class_mean_angle(aligned, r, labels, num_classes)
  return scores


_fit_procrustes = jax.jit(fit_procrustes)
_fit_ridge = jax.jit(fit_ridge, static_argnames=("ridge",))


def retrain_consistency(unlearned: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                        *, labels: Mapping[str, np.ndarray] | None = None, k: int = 10,
                        ridge: float = 1e-3, calibration: str = "calibration") -> dict[str, float]:
  """The docs/math.md §4 suite of θ_u's features against a reference's (Retrain), per input set.

  Both alignments are fitted on the ``calibration`` entry (held-out kept-class images). For
  every other set S: "S/cka", "S/rho_baseline" = k_S/d, and for a ∈ {procrustes, ridge}:
  "S/rc/a" = RC_S (mean δ), "S/cos/a" (mean 1 − cos), "S/rho/a" = ρ_k along R_S's top-k_S
  principal directions, "S/erank/a", "S/overlap/a" (top-k_S subspace overlap of U_S A and R_S) and,
  with ``labels``, "S/class_angle/a" (degrees). k_S = min(k, n_S, d). With sets "forget" and
  "retain": "asym/cka" = CKA_{D_f} − CKA_{D_r} and "asym/rc/a" = RC_{D_r} − RC_{D_f} (positive =
  closer to Retrain on the forget set than on the retain set).

  Args:
    unlearned: set name → [n_S, d_u] features of θ_u (must include ``calibration``).
    reference: set name → [n_S, d_r] features of the reference on the same inputs.
    labels: optional set name → [n_S] labels (for class-mean angles).
    k: number of principal directions.
    ridge: relative ridge strength of the ridge alignment.
    calibration: the name of the set that the alignments are fitted on.

  Returns:
    A flat dict of floats.

  Raises:
    ValueError: different set names in the two dicts, no calibration set, an empty set,
      mismatched row counts, or ``k`` < 1.
  """
  if k < 1:
    raise ValueError(f"k: {k} < 1.")
  if calibration not in unlearned or calibration not in reference:
    raise ValueError(f"unlearned/reference: both need the calibration set {calibration!r}.")
  if set(unlearned) != set(reference):
    raise ValueError(f"unlearned/reference: different sets {sorted(unlearned)} and "
                     f"{sorted(reference)}.")
  u_cal, r_cal = jnp.asarray(unlearned[calibration]), jnp.asarray(reference[calibration])
  alignments = {"procrustes": _fit_procrustes(u_cal, r_cal),
                "ridge": _fit_ridge(u_cal, r_cal, ridge=ridge)}
  num_classes = None
  if labels is not None:
    num_classes = int(max(np.max(v) for v in labels.values() if len(v))) + 1
  out: dict[str, float] = {}
  for name in unlearned:
    if name == calibration:
      continue
    u, r = jnp.asarray(unlearned[name]), jnp.asarray(reference[name])
    check_rows(u, r, f"unlearned[{name!r}]/reference[{name!r}]")
    k_s = min(k, *r.shape)
    out[f"{name}/cka"] = float(linear_cka(u, r))
    out[f"{name}/rho_baseline"] = k_s / r.shape[1]
    set_labels = None if labels is None else jnp.asarray(labels[name])
    for a, alignment in alignments.items():
      scores = _set_scores(u, r, alignment, set_labels, k=k_s, num_classes=num_classes)
      out |= {f"{name}/{metric}/{a}": float(v) for metric, v in scores.items()}
  if "forget" in unlearned and "retain" in unlearned:
    out["asym/cka"] = out["forget/cka"] - out["retain/cka"]
    for a in ALIGNMENTS:
      out[f"asym/rc/{a}"] = out[f"retain/rc/{a}"] - out[f"forget/rc/{a}"]
  return out


def noise_floor(references: Sequence[Mapping[str, np.ndarray]], **kwargs) -> dict[str, float]:
  """Mean and std of :func:`retrain_consistency` over all pairs (i < j) of reference seeds.

  A method is retraining-consistent on a score only if it lies within this seed-to-seed band
  (docs/math.md §4.5).

  Args:
    references: per Retrain seed, set name → features (as ``unlearned`` above).
    **kwargs: passed to :func:`retrain_consistency`.

  Returns:
    {"<score>/mean": …, "<score>/std": …} (population std over the pairs).

  Raises:
    ValueError: fewer than 2 references.
  """
  if len(references) < 2:
    raise ValueError(f"references: {len(references)} Retrain seed(s); need at least 2.")
  pairs = [retrain_consistency(a, b, **kwargs)
           for a, b in itertools.combinations(references, 2)]
  out = {}
  for key in pairs[0]:
    values = np.asarray([p[key] for p in pairs])
    out[f"{key}/mean"], out[f"{key}/std"] = float(values.mean()), float(values.std())
  return out


def feature_sets(model: Model, params, model_state, splits: Splits, *,
                 sets: Sequence[str] = SETS, max_examples: int | None = None,
                 batch_size: int = 512) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Penultimate features and labels of each named split (the first ``max_examples`` of each).

  Empty splits (e.g. ``test_forget`` in random forgetting) are left out.

  Returns:
    (set name → [n_S, d] features, set name → [n_S] labels).

  Raises:
    ValueError: an unknown set name.
  """
  unknown = set(sets) - set(SETS)
  if unknown:
    raise ValueError(f"sets: unknown {sorted(unknown)}; allowed: {', '.join(SETS)}.")
  features, labels = {}, {}
  for name in sets:
    data = getattr(splits, name)
    if max_examples is not None:
      data = data.subset(np.arange(min(max_examples, len(data))))
    if len(data) == 0:
      continue
    features[name] = model_outputs(model, params, model_state, data, batch_size=batch_size)[0]
    labels[name] = data.labels
  return features, labels


def _prepare(model: Model, original: tuple, splits: Splits, retrains: Sequence[tuple],
             settings: registry.Settings, *, seed: int) -> list[dict[str, np.ndarray]]:
  """The :func:`feature_sets` of every Retrain model."""
  return [feature_sets(model, *r, splits)[0] for r in retrains]


def _evaluate(model: Model, params, model_state, context, settings: registry.Settings, *,
              seed: int) -> tuple[dict, dict]:
  """CKA and RC (Procrustes) of θ_u's features against the first Retrain's, on D_f and D_r, and
  their asymmetry; details "representation" (every score of :func:`retrain_consistency`)."""
  features, _ = feature_sets(model, params, model_state, context.splits)
  consistency = retrain_consistency(features, context.shared["representation"][0],
                                    labels=context.labels)
  return ({"CKA/retrain/forget": consistency["forget/cka"],
           "CKA/retrain/retain": consistency["retain/cka"],
           "RC/forget": consistency["forget/rc/procrustes"],
           "RC/retain": consistency["retain/rc/procrustes"],
           "asymmetry": consistency.get("asym/rc/procrustes")},
          {"representation": consistency})


METRIC = registry.register(registry.Metric(
    "representation", _evaluate,
    columns=(("CKA→Retrain D_f", "CKA/retrain/forget", ".3f"),
             ("CKA→Retrain D_r", "CKA/retrain/retain", ".3f")),
    needs=("retrain",), switch=True, prepare=_prepare))


__all__ = ["ALIGNMENTS", "Alignment", "METRIC", "SETS", "align", "class_mean_angle",
           "concentration", "cosine_distance", "effective_rank", "feature_sets", "fit_procrustes",
           "fit_ridge", "linear_cka", "noise_floor", "principal_directions", "relative_residual",
           "retrain_consistency", "subspace_overlap"]
