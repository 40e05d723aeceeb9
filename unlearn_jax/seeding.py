"""Every random choice derives from one recorded root seed.

Host-side choices (splits, epoch orders, attack shots) use a NumPy generator keyed by the seed and a
purpose path; device-side randomness uses ``jax.random`` keys folded with the same path. So two
processes, or two runs, with the same seed make identical choices.
"""

import zlib

import jax
import numpy as np


def _purpose_ints(path: tuple) -> list[int]:
  return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in path]


def host_rng(seed: int, *purpose: str | int) -> np.random.Generator:
  """A NumPy generator that is a function of ``seed`` and the purpose path alone."""
  return np.random.default_rng([int(seed), *_purpose_ints(purpose)])


def device_key(seed: int, *purpose: str | int) -> jax.Array:
  """A typed JAX key that is a function of ``seed`` and the purpose path alone."""
  key = jax.random.key(int(seed))
  for p in _purpose_ints(purpose):
    key = jax.random.fold_in(key, p)
  return key
