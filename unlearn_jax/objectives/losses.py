"""Loss functions in optax's form: pure, jit-able, arrays in and arrays out.

As in ``optax.losses``: predictions first (logits or log-probabilities), targets second; options
are keyword-only; ``axis`` is the axis reduced over (classes or features for a per-example loss,
examples for a set loss) and ``where`` selects the entries that take part in that reduction.
Probabilities use natural logs; 0·log 0 = 0 (``xlogy``). ``forget_mask`` is a bool vector [C],
True on 𝒞_f. Definitions: docs/math.md §2.3 (Spotter), §3.1 (OPC), §5 (baselines).

>>> import jax.numpy as jnp
>>> round(float(kl_divergence(jnp.log(jnp.array([0.5, 0.5])), jnp.array([1.0, 0.0]))), 4)
0.6931
"""

import jax
import jax.numpy as jnp
import optax

NORM_EPS = 1e-6

Axis = int | tuple[int, ...] | None


def cross_entropy(logits: jax.Array, labels: jax.Array, *, axis: int = -1,
                  where: jax.Array | None = None) -> jax.Array:
  """CE(s, y) = −log softmax(s)_y per example. logits [B, C], labels int [B] → [B]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis, where=where)


def masked_softmax(logits: jax.Array, forget_mask: jax.Array, *, axis: int = -1) -> jax.Array:
  """p̃(x): softmax over the kept logits; forget-class entries exactly 0, rows sum to 1.

  Equals renormalising softmax(s) after zeroing 𝒞_f (docs/math.md §2.2) but never reads the
  forget logits. A row with every class masked is all NaN (softmax of −inf only); the library's
  masks never do that (``UnlearningData.forget_mask`` refuses to forget every class).
  """
  masked = jnp.where(jnp.broadcast_to(forget_mask, logits.shape), -jnp.inf, logits)
  return jax.nn.softmax(masked, axis=axis)


def kl_divergence(log_predictions: jax.Array, targets: jax.Array, *, axis: Axis = -1,
                  where: jax.Array | None = None) -> jax.Array:
  """KL(p ‖ q) = Σ_k p_k (log p_k − log q_k), p = targets, log q = log_predictions.

  Zero-probability targets add 0 even where log q = −inf (unlike ``optax.kl_divergence``).
  """
  return jnp.sum(jax.scipy.special.xlogy(targets, targets)
                 - jnp.where(targets > 0, targets * log_predictions, 0.0), axis=axis, where=where)


def distillation(logits: jax.Array, teacher_logits: jax.Array, *, temperature: float = 1.0,
                 forget_mask: jax.Array | None = None, axis: int = -1) -> jax.Array:
  """T² · KL(softmax(t/T) ‖ softmax(s/T)) per example, s = ``logits`` (Hinton et al., 2015).

  With ``forget_mask`` the teacher distribution is the masked softmax p̃ (masked KD, Spotter's
  L_mkd, docs/math.md §2.3): the student is pulled toward "the original model without 𝒞_f".
  """
  t = teacher_logits / temperature
  target = (jax.nn.softmax(t, axis=axis) if forget_mask is None
            else masked_softmax(t, forget_mask, axis=axis))
  log_q = jax.nn.log_softmax(logits / temperature, axis=axis)
  return temperature**2 * kl_divergence(log_q, jax.lax.stop_gradient(target), axis=axis)


def js_divergence(predictions: jax.Array, targets: jax.Array, *, axis: Axis = -1,
                  where: jax.Array | None = None) -> jax.Array:
  """JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2, on probabilities; in [0, ln 2]."""
  m = 0.5 * (targets + predictions)
  log_m = jnp.log(m + 1e-12)
  return 0.5 * (kl_divergence(log_m, targets, axis=axis, where=where)
                + kl_divergence(log_m, predictions, axis=axis, where=where))


def safe_normalize(x: jax.Array, eps: float = NORM_EPS, *, axis: int = -1) -> jax.Array:
  """x / sqrt(‖x‖² + ε²) along ``axis``: finite value and gradient at x = 0."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps**2)


def safe_norm(x: jax.Array, eps: float = NORM_EPS, *, axis: Axis = -1,
              where: jax.Array | None = None) -> jax.Array:
  """sqrt(‖x‖² + ε²) − ε along ``axis``: 0 with zero gradient at x = 0, ‖x‖ − O(ε) elsewhere."""
  return jnp.sqrt(jnp.sum(x * x, axis=axis, where=where) + eps**2) - eps


def dispersion(features: jax.Array, labels: jax.Array, *, axis: int = -1,
               where: jax.Array | None = None) -> jax.Array:
  """Intra-class dispersion (Spotter's L_disp, docs/math.md §2.3): mean same-label pair cosine.

  L = Σ_ij G_ij M_ij / max(Σ_ij M_ij, 1), G = Ẑ Ẑᵀ with rows normalised along the feature
  ``axis`` (as ``optax.cosine_similarity``), M_ij = [y_i = y_j][i ≠ j] w_i w_j with w = ``where``
  over the examples [B]. One Gram matrix, no per-class loop; a scalar (pairs, not examples).
  Identical features give 1; an orthonormal set gives 0.
  """
  z = jnp.moveaxis(safe_normalize(features, axis=axis), axis, -1)
  w = jnp.ones(labels.shape, z.dtype) if where is None else where.astype(z.dtype)
  same = (labels[:, None] == labels[None, :]) & ~jnp.eye(labels.shape[0], dtype=bool)
  pairs = same * w[:, None] * w[None, :]
  return jnp.sum((z @ z.T) * pairs) / jnp.maximum(jnp.sum(pairs), 1.0)


def contraction(representations: jax.Array, *, squared: bool = False, axis: Axis = -1,
                where: jax.Array | None = None) -> jax.Array:
  """One-point contraction toward 0 (OPC, docs/math.md §3.1): ‖r(x)‖₂ or ‖r(x)‖₂² per example."""
  if squared:
    return jnp.sum(representations**2, axis=axis, where=where)
  return safe_norm(representations, axis=axis, where=where)


def relative_squared_error(x: jax.Array, target: jax.Array, *, axis: Axis = -1,
                           eps: float = NORM_EPS) -> jax.Array:
  """‖x − t‖² / max(‖t‖², ε) along ``axis``: 0 at x = t, 1 at x = 0, whatever t's scale."""
  return jnp.sum((x - target) ** 2, axis=axis) / jnp.maximum(jnp.sum(target**2, axis=axis), eps)


def l1_norm(params) -> jax.Array:
  """‖θ‖₁ = Σ |θ_i| over every leaf."""
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


def masked_mean(values: jax.Array, *, axis: Axis = None,
                where: jax.Array | None = None) -> jax.Array:
  """Σ w_i v_i / max(Σ w_i, 1) along ``axis``, w = ``where``: the mean over real (unpadded) entries.

  Unlike ``jnp.mean(..., where=)``, a slice with no selected entry gives 0, not NaN.
  """
  if where is None:
    return jnp.mean(values, axis=axis)
  w = where.astype(values.dtype)
  return jnp.sum(values * w, axis=axis) / jnp.maximum(jnp.sum(w, axis=axis), 1.0)
