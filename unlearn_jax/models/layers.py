"""Shared layers: input normalisation and a max-pool whose gradient is fast on XLA CPU."""

import jax.numpy as jnp


def normalize(images: jnp.ndarray, mean, std) -> jnp.ndarray:
  """(x − μ) / σ per channel; images arrive in [0, 1]."""
  shape = (1,) * (images.ndim - 1) + (-1,)
  mean = jnp.asarray(mean, images.dtype).reshape(shape)
  return (images - mean) / jnp.asarray(std, images.dtype).reshape(shape)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2×2 max-pool, stride 2, floor mode, NHWC.

  Written as reshape + max rather than ``reduce_window``: on XLA CPU the gradient of
  ``reduce_window`` max is about 10× slower (design.md, measured).
  """
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  """Mean over the spatial axes: [B, H, W, C] → [B, C]."""
  return x.mean(axis=(1, 2))
