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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.models import Model
from unlearn_jax.objectives.losses import NORM_EPS, safe_normalize

ALIGNMENTS = ("procrustes", "ridge")
SETS = ("forget", "retain", "test_forget", "test_retain", "calibration")


def _check_features(x: jax.Array, field: str) -> None:
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{field}: expected a non-empty feature matrix [n, d], got {x.shape}.")


def _check_rows(x: jax.Array, y: jax.Array, fields: str) -> None:
  _check_features(x, fields.split("/")[0])
  _check_features(y, fields.split("/")[1])
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"{fields}: the two feature matrices must have one row per input, got "
                     f"{x.shape[0]} and {y.shape[0]} rows.")


def _centre(x: jax.Array) -> jax.Array:
  return x - jnp.mean(x, axis=0, keepdims=True)


def linear_cka(x: jax.Array, y: jax.Array, *, rtol: float = 1e-5) -> jax.Array:
  """CKA(X, Y) = ‖Y_cᵀX_c‖_F² / (‖X_cᵀX_c‖_F ‖Y_cᵀY_c‖_F), X_c, Y_c centred (docs/math.md §3.4).

  Invariant to orthogonal transforms and isotropic scaling of either matrix; CKA(X, X) = 1. A
  collapsed matrix (‖X_c‖_F ≤ rtol·‖X‖_F, e.g. OPC's one-point features; the tolerance absorbs
  float32 rounding of the mean) has no variance to compare, and its CKA is defined as 0.

  Args:
    x: [n, d1] features of n inputs.
    y: [n, d2] features of the same inputs.
    rtol: relative tolerance below which a centred matrix counts as collapsed.

  Returns:
    Scalar in [0, 1].

  Raises:
    ValueError: not two non-empty [n, d] matrices with the same n.
  """
  _check_rows(x, y, "x/y")
  xc, yc = _centre(x), _centre(y)
  if x.shape[0] < x.shape[1] + y.shape[1]:  # Gram form: n×n instead of d×d products.
    kx, ky = xc @ xc.T, yc @ yc.T
    num, den = jnp.sum(kx * ky), jnp.linalg.norm(kx) * jnp.linalg.norm(ky)
  else:
    num = jnp.sum(jnp.square(yc.T @ xc))
    den = jnp.linalg.norm(xc.T @ xc) * jnp.linalg.norm(yc.T @ yc)
  live = ((jnp.linalg.norm(xc) > rtol * jnp.linalg.norm(x))
          & (jnp.linalg.norm(yc) > rtol * jnp.linalg.norm(y)) & (den > 0))
  return jnp.where(live, num / jnp.where(live, den, 1.0), 0.0)


class Alignment(NamedTuple):
  """An affine map u ↦ (u − μ_u) A + μ_r from source features [·, d_u] to target [·, d_r]."""

  source_mean: jax.Array  # [d_u]
  matrix: jax.Array  # [d_u, d_r]
  target_mean: jax.Array  # [d_r]


def fit_procrustes(source: jax.Array, target: jax.Array, *, scale: bool = False) -> Alignment:
  """Orthogonal Procrustes A = P Qᵀ from the SVD U_cᵀR_c = P Σ Qᵀ (docs/math.md §4.1 (i)).

  A minimises ‖U_c A − R_c‖_F over (semi-)orthogonal A; with ``scale`` it is multiplied by
  s = tr Σ / ‖U_c‖_F², the optimal isotropic scale.

  Args:
    source: [n, d_u] unlearned features U_cal of the calibration set.
    target: [n, d_r] reference (Retrain) features R_cal of the same inputs.
    scale: also fit an isotropic scale.

  Returns:
    An :class:`Alignment`.

  Raises:
    ValueError: not two non-empty [n, d] matrices with the same n.
  """
  _check_rows(source, target, "source/target")
  uc, rc = _centre(source), _centre(target)
  p, sigma, qt = jnp.linalg.svd(uc.T @ rc, full_matrices=False)
  matrix = p @ qt
  if scale:
    matrix = matrix * (jnp.sum(sigma) / jnp.maximum(jnp.sum(uc * uc), NORM_EPS**2))
  return Alignment(jnp.mean(source, axis=0), matrix, jnp.mean(target, axis=0))


def fit_ridge(source: jax.Array, target: jax.Array, *, ridge: float = 1e-3) -> Alignment:
  """Ridge map A = (U_cᵀU_c + γI)⁻¹U_cᵀR_c, γ = ridge·tr(U_cᵀU_c)/d_u (docs/math.md §4.1 (ii)).

  The intercept is the difference of means (unpenalised). Collapsed source features give A = 0.

  Args:
    source: [n, d_u] unlearned features of the calibration set.
    target: [n, d_r] reference features of the same inputs.
    ridge: relative ridge strength (≥ 0).

  Returns:
    An :class:`Alignment`.

  Raises:
    ValueError: mismatched or empty matrices, or ``ridge`` < 0.
  """
  _check_rows(source, target, "source/target")
  if ridge < 0:
    raise ValueError(f"ridge: {ridge} < 0; must be ≥ 0.")
  uc, rc = _centre(source), _centre(target)
  gram = uc.T @ uc
  gamma = ridge * jnp.trace(gram) / gram.shape[0] + NORM_EPS**2
  matrix = jnp.linalg.solve(gram + gamma * jnp.eye(gram.shape[0], dtype=gram.dtype), uc.T @ rc)
  return Alignment(jnp.mean(source, axis=0), matrix, jnp.mean(target, axis=0))


def align(alignment: Alignment, source: jax.Array) -> jax.Array:
  """U A: (u − μ_u) A + μ_r for every row u of ``source`` [n, d_u] → [n, d_r]."""
  return (source - alignment.source_mean[None, :]) @ alignment.matrix \
      + alignment.target_mean[None, :]


def relative_residual(aligned: jax.Array, reference: jax.Array) -> jax.Array:
  """δ(x) = ‖U(x)A − R(x)‖₂ / ‖R(x)‖₂ per row ([n, d] × 2 → [n]); ‖R‖ is ε-guarded."""
  _check_rows(aligned, reference, "aligned/reference")
  err = jnp.linalg.norm(aligned - reference, axis=-1)
  return err / jnp.sqrt(jnp.sum(reference * reference, axis=-1) + NORM_EPS**2)


def cosine_distance(aligned: jax.Array, reference: jax.Array) -> jax.Array:
  """1 − cos(U(x)A, R(x)) per row, in [0, 2]; a zero row counts as orthogonal (distance 1)."""
  _check_rows(aligned, reference, "aligned/reference")
  return 1.0 - jnp.sum(safe_normalize(aligned) * safe_normalize(reference), axis=-1)


def principal_directions(x: jax.Array, k: int) -> jax.Array:
  """P_k: the top-k principal directions (rows, orthonormal) of the column-centred x [n, d].

  Raises:
    ValueError: ``k`` not in 1..min(n, d).
  """
  _check_features(x, "x")
  if not 1 <= k <= min(x.shape):
    raise ValueError(f"k: {k}; must be in 1..min(n, d) = 1..{min(x.shape)}.")
  xc = _centre(x)
  # Eigenvectors of the d×d scatter matrix (eigh compiles far faster than a full SVD on CPU).
  return jnp.linalg.eigh(xc.T @ xc)[1][:, ::-1][:, :k].T


def concentration(residual: jax.Array, directions: jax.Array) -> jax.Array:
  """ρ_k = Σ_x ‖e(x) P_kᵀ‖² / Σ_x ‖e(x)‖² (docs/math.md §4.4); 0 for a zero residual.

  k/d is the value for a residual spread evenly over all d directions; ρ_k ≫ k/d means the residual
  lies along the reference's leading directions.

  Args:
    residual: [n, d] residuals e(x).
    directions: [k, d] orthonormal rows P_k (:func:`principal_directions`).

  Returns:
    Scalar in [0, 1].

  Raises:
    ValueError: the two widths d differ.
  """
  _check_features(residual, "residual")
  if directions.ndim != 2 or directions.shape[1] != residual.shape[1]:
    raise ValueError(f"directions: expected [k, {residual.shape[1]}], got {directions.shape}.")
  total = jnp.sum(residual * residual)
  return jnp.sum(jnp.square(residual @ directions.T)) / jnp.maximum(total, NORM_EPS**2)


def effective_rank(residual: jax.Array) -> jax.Array:
  """erank = exp(H(λ/Σλ)), λ the eigenvalues of the residual covariance (Roy & Vetterli, 2007).

  Between 1 (one direction) and d (isotropic); 0 for a zero residual.

  Args:
    residual: [n, d] residuals e(x) (centred here).

  Returns:
    Scalar.
  """
  _check_features(residual, "residual")
  ec = _centre(residual)
  lam = jnp.maximum(jnp.linalg.eigvalsh(ec.T @ ec), 0.0)
  total = jnp.sum(lam)
  p = lam / jnp.maximum(total, NORM_EPS**2)
  entropy = -jnp.sum(jax.scipy.special.xlogy(p, p))
  return jnp.where(total > 0, jnp.exp(entropy), 0.0)


def subspace_overlap(x: jax.Array, y: jax.Array, k: int) -> jax.Array:
  """‖P_k^x P_k^{yᵀ}‖_F² / k: 1 for identical top-k principal subspaces, 0 for orthogonal ones.

  Args:
    x: [n_x, d] features (e.g. aligned unlearned, U_S A).
    y: [n_y, d] features (e.g. reference, R_S).
    k: subspace dimension.

  Raises:
    ValueError: the widths differ or ``k`` is out of range for either matrix.
  """
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"x/y: expected [n, d] matrices of one width, got {x.shape} and {y.shape}.")
  return jnp.sum(jnp.square(principal_directions(x, k) @ principal_directions(y, k).T)) / k


def class_mean_angle(aligned: jax.Array, reference: jax.Array, labels: jax.Array,
                     num_classes: int) -> jax.Array:
  """Mean over the classes present of ∠(μ_c^u, μ_c^r) in degrees, class means of U A and R.

  Args:
    aligned: [n, d] aligned unlearned features U A.
    reference: [n, d] reference features R.
    labels: [n] int class labels.
    num_classes: C (static).

  Returns:
    Scalar angle in [0, 180].
  """
  _check_rows(aligned, reference, "aligned/reference")
  mu_u = jax.ops.segment_sum(aligned, labels, num_classes)
  mu_r = jax.ops.segment_sum(reference, labels, num_classes)
  count = jax.ops.segment_sum(jnp.ones(labels.shape, aligned.dtype), labels, num_classes)
  cos = jnp.sum(safe_normalize(mu_u) * safe_normalize(mu_r), axis=-1)
  angle = jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))
  present = count > 0
  return jnp.sum(jnp.where(present, angle, 0.0)) / jnp.maximum(jnp.sum(present), 1)


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
    _check_rows(u, r, f"unlearned[{name!r}]/reference[{name!r}]")
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
