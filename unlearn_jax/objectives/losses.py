"""Per-example loss functions: pure, jit-able, one value per example.

Conventions follow optax's losses: arrays in, arrays out, keyword-only options. Probabilities use
natural logs; 0·log 0 = 0 (``xlogy``). ``forget_mask`` is a bool vector [C], True on 𝒞_f.
"""

import jax
import jax.numpy as jnp
import optax

NORM_EPS = 1e-6


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """CE(s, y) = −log softmax(s)_y per example. logits [B, C], labels int [B] → [B]."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def masked_log_softmax(logits: jax.Array, forget_mask: jax.Array) -> jax.Array:
  """log p̃ with p̃_k = softmax over kept logits only, p̃_k = 0 (log = −inf) for k ∈ 𝒞_f.

  Equals renormalising softmax(s) after zeroing forget classes (papers.md §2.4), but never reads
  the forget logits, so p̃ cannot depend on them.
  """
  masked = jnp.where(jnp.broadcast_to(forget_mask, logits.shape), -jnp.inf, logits)
  return jax.nn.log_softmax(masked, axis=-1)


def masked_softmax(logits: jax.Array, forget_mask: jax.Array) -> jax.Array:
  """p̃(x): softmax over the kept logits; forget-class entries exactly 0, rows sum to 1."""
  masked = jnp.where(jnp.broadcast_to(forget_mask, logits.shape), -jnp.inf, logits)
  return jax.nn.softmax(masked, axis=-1)


def kl_divergence(target_probs: jax.Array, log_probs: jax.Array) -> jax.Array:
  """KL(p ‖ q) = Σ_k p_k (log p_k − log q_k) per example; zero-probability targets add 0."""
  return jnp.sum(jax.scipy.special.xlogy(target_probs, target_probs)
                 - jnp.where(target_probs > 0, target_probs * log_probs, 0.0), axis=-1)


def distillation(teacher_logits: jax.Array, student_logits: jax.Array, *,
                 temperature: float = 1.0, forget_mask: jax.Array | None = None) -> jax.Array:
  """T² · KL(softmax(t/T) ‖ softmax(s/T)) per example (Hinton et al., 2015).

  With ``forget_mask`` the teacher distribution is the masked softmax p̃ (masked KD, Spotter
  eq. L_mkd): the student is pulled toward "the original model without the forget classes".
  """
  t = teacher_logits / temperature
  target = jax.nn.softmax(t) if forget_mask is None else masked_softmax(t, forget_mask)
  log_q = jax.nn.log_softmax(student_logits / temperature)
  return temperature**2 * kl_divergence(jax.lax.stop_gradient(target), log_q)


def js_divergence(p: jax.Array, q: jax.Array) -> jax.Array:
  """JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2, natural log; in [0, ln 2]."""
  m = 0.5 * (p + q)
  log_m = jnp.log(m + 1e-12)
  return 0.5 * (kl_divergence(p, log_m) + kl_divergence(q, log_m))


def safe_normalize(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """x / sqrt(‖x‖² + ε²) along the last axis: finite value and gradient at x = 0."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps**2)


def safe_norm(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """sqrt(‖x‖² + ε²) − ε: 0 with zero gradient at x = 0, ‖x‖ − O(ε) elsewhere."""
  return jnp.sqrt(jnp.sum(x * x, axis=-1) + eps**2) - eps


def dispersion(features: jax.Array, labels: jax.Array, *,
               where: jax.Array | None = None) -> jax.Array:
  """Intra-class dispersion loss (Spotter L_disp): mean same-label off-diagonal cosine.

  L = Σ_ij G_ij M_ij / max(Σ_ij M_ij, 1), G = Ẑ Ẑᵀ with L2-normalised rows, M_ij = [y_i = y_j]
  [i ≠ j] w_i w_j. One Gram matrix, no per-class loop. Returns a scalar (pairs, not examples).
  Identical features give 1; an orthonormal set gives 0.
  """
  z = safe_normalize(features)
  w = jnp.ones(labels.shape, z.dtype) if where is None else where.astype(z.dtype)
  same = (labels[:, None] == labels[None, :]) & ~jnp.eye(labels.shape[0], dtype=bool)
  pairs = same * w[:, None] * w[None, :]
  return jnp.sum((z @ z.T) * pairs) / jnp.maximum(jnp.sum(pairs), 1.0)


def contraction(representations: jax.Array, *, squared: bool = False) -> jax.Array:
  """One-point contraction toward 0 (OPC): ‖r(x)‖₂ or ‖r(x)‖₂² per example."""
  if squared:
    return jnp.sum(representations**2, axis=-1)
  return safe_norm(representations)


def l1_norm(params) -> jax.Array:
  """‖θ‖₁ = Σ |θ_i| over every leaf."""
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


def masked_mean(values: jax.Array, where: jax.Array | None) -> jax.Array:
  """Σ w_i v_i / max(Σ w_i, 1): the mean over real (unpadded) examples."""
  if where is None:
    return jnp.mean(values)
  w = where.astype(values.dtype)
  return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)
