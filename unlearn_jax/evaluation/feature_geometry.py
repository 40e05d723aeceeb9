"""Pure geometry of feature matrices [n, d] (rows: the same inputs in both), jit-able: linear CKA
(docs/math.md §3.4), alignment maps (orthogonal Procrustes, ridge) and the residual scores of
§4 (relative size, direction, concentration along principal directions, effective rank,
subspace overlap, class-mean angles). Degenerate (collapsed) features give finite scores.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from unlearn_jax.objectives.losses import NORM_EPS, safe_normalize


def _check_features(x: jax.Array, field: str) -> None:
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"{field}: expected a non-empty feature matrix [n, d], got {x.shape}.")


def check_rows(x: jax.Array, y: jax.Array, fields: str) -> None:
  """ValueError unless ``x`` and ``y`` are non-empty [n, d] matrices with one row per input
  (``fields`` = "name of x/name of y", for the message)."""
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
  check_rows(x, y, "x/y")
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
  check_rows(source, target, "source/target")
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
  check_rows(source, target, "source/target")
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
  check_rows(aligned, reference, "aligned/reference")
  err = jnp.linalg.norm(aligned - reference, axis=-1)
  return err / jnp.sqrt(jnp.sum(reference * reference, axis=-1) + NORM_EPS**2)


def cosine_distance(aligned: jax.Array, reference: jax.Array) -> jax.Array:
  """1 − cos(U(x)A, R(x)) per row, in [0, 2]; a zero row counts as orthogonal (distance 1)."""
  check_rows(aligned, reference, "aligned/reference")
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
  check_rows(aligned, reference, "aligned/reference")
  mu_u = jax.ops.segment_sum(aligned, labels, num_classes)
  mu_r = jax.ops.segment_sum(reference, labels, num_classes)
  count = jax.ops.segment_sum(jnp.ones(labels.shape, aligned.dtype), labels, num_classes)
  cos = jnp.sum(safe_normalize(mu_u) * safe_normalize(mu_r), axis=-1)
  angle = jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))
  present = count > 0
  return jnp.sum(jnp.where(present, angle, 0.0)) / jnp.maximum(jnp.sum(present), 1)
