"""On-device augmentation as pure functions of (images, key)."""

import jax
import jax.numpy as jnp


def random_crop_flip(images: jax.Array, key: jax.Array, *, pad: int = 4,
                     flip: bool = True) -> jax.Array:
  """Random crop of the original size after zero-padding by ``pad``, then a random h-flip.

  The CIFAR recipe of the Spotter reference code (RandomCrop(32, padding=4) + flip). [B,H,W,C].
  """
  b, h, w, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * pad + 1)
  crop = jax.vmap(lambda x, o: jax.lax.dynamic_slice(x, (o[0], o[1], 0), (h, w, x.shape[-1])))
  out = crop(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
    out = jnp.where(do_flip, out[:, :, ::-1], out)
  return out
