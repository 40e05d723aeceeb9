"""Shared layers: input normalisation, the compute dtype, and a max-pool whose gradient is fast
on XLA CPU."""

import jax.numpy as jnp

PRECISIONS = ("float32", "bfloat16")


def compute_dtype(name: str):
  """The dtype layers compute in for a model's ``dtype`` option: None for "float32" (Flax then
  computes in the parameters' float32, exactly as without the option), else ``jnp.bfloat16``.
  Parameters stay float32 either way (Flax's ``param_dtype``)."""
  if name not in PRECISIONS:
    raise ValueError(f"model.options.dtype: {name!r}; allowed: {', '.join(PRECISIONS)}.")
  return None if name == "float32" else jnp.dtype(name)


def upcast(x: jnp.ndarray) -> jnp.ndarray:
  """``x`` in at least float32: bfloat16 becomes float32, float32 and float64 stay (no
  operation)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def normalize(images: jnp.ndarray, mean, std, dtype=None) -> jnp.ndarray:
  """(x − μ) / σ per channel, computed in the images' dtype, then cast to ``dtype`` (None: kept);
  images arrive in [0, 1]."""
  shape = (1,) * (images.ndim - 1) + (-1,)
  mean = jnp.asarray(mean, images.dtype).reshape(shape)
  out = (images - mean) / jnp.asarray(std, images.dtype).reshape(shape)
  return out if dtype is None else out.astype(dtype)


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
