"""Batching by index from in-memory arrays.

A :class:`Stream` turns a global step number into a batch, so the data a step sees is a pure
function of (seed, stream name, step): resuming at step s replays exactly the batches an
uninterrupted run would see. Every epoch is a fresh permutation; the last batch of an epoch is
padded to the full batch size with ``mask = 0`` so shapes never change (no recompilation).
"""

import functools
import math

import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset, pixels_to_float

Batch = dict[str, np.ndarray]


def pad_to_multiple(n: int, multiple: int) -> int:
  """⌈n / multiple⌉ · multiple: the smallest multiple of ``multiple`` that is ≥ n.

  >>> pad_to_multiple(10, 4)
  12
  """
  return int(math.ceil(n / multiple) * multiple)


def pad_index(index: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(``index`` padded with 0 to ``batch_size`` rows, int64; ``mask``: 1 on its rows, 0 on the
  padding, float32)."""
  pad = batch_size - len(index)
  if pad < 0:
    raise ValueError(f"batch_size {batch_size} is smaller than the {len(index)} indices.")
  padded = np.concatenate([index, np.zeros(pad, dtype=np.int64)]).astype(np.int64)
  return padded, np.concatenate([np.ones(len(index)), np.zeros(pad)]).astype(np.float32)


def gather(data: ArrayDataset, index: np.ndarray, batch_size: int | None = None,
           extras: dict[str, np.ndarray] | None = None, *, stored: bool = False) -> Batch:
  """Batch of ``data[index]`` (and of each per-example ``extras`` array), padded to
  ``batch_size`` rows with ``mask`` 0.

  ``stored``: images as the dataset keeps them (uint8 pixels, which a jitted step converts with
  :func:`~unlearn_jax.data.datasets.pixels_to_float`; rows of images read by index stay a view,
  read where they are placed) instead of floats in [0, 1].
  """
  padded, mask = pad_index(index, batch_size or len(index))
  rows = data.stored_rows(padded)
  images = rows if stored else pixels_to_float(np.asarray(rows))
  batch = {"image": images, "label": data.labels[padded], "mask": mask}
  return batch | {k: v[padded] for k, v in (extras or {}).items()}


class Stream:
  """Batches of ``data`` addressed by step number, reshuffled every epoch.

  Args:
    data: the examples.
    batch_size: rows per batch (the last batch of an epoch is padded with mask 0).
    seed, name: the epoch order is a function of (seed, name, epoch) alone.
    shuffle: permute each epoch (else keep the stored order).
    extras: per-example arrays batched alongside (e.g. Bad Teacher's ``is_forget``).
    stored: batches carry images as the dataset keeps them (see :func:`gather`).
  """

  def __init__(self, data: ArrayDataset, batch_size: int, *, seed: int, name: str,
               shuffle: bool = True, extras: dict[str, np.ndarray] | None = None,
               stored: bool = False):
    if len(data) == 0:
      raise ValueError(f"stream '{name}': no examples to batch.")
    if batch_size <= 0:
      raise ValueError(f"stream '{name}': batch_size must be positive, got {batch_size}.")
    self.data, self.batch_size, self.seed, self.name, self.shuffle = (
        data, batch_size, seed, name, shuffle)
    self.extras, self.stored = extras or {}, stored

  @property
  def steps_per_epoch(self) -> int:
    return int(math.ceil(len(self.data) / self.batch_size))

  @functools.lru_cache(maxsize=2)  # noqa: B019  (one stream lives for one run)
  def order(self, epoch: int) -> np.ndarray:
    n = len(self.data)
    if not self.shuffle:
      return np.arange(n)
    return seeding.host_rng(self.seed, "stream", self.name, epoch).permutation(n)

  def index(self, step: int) -> np.ndarray:
    """The example numbers of global ``step``'s batch, unpadded (epochs cycle, so a shorter
    stream repeats)."""
    epoch, b = divmod(step, self.steps_per_epoch)
    return self.order(epoch)[b * self.batch_size:(b + 1) * self.batch_size]

  def batch(self, step: int) -> Batch:
    """The batch of global ``step``."""
    return gather(self.data, self.index(step), self.batch_size, self.extras, stored=self.stored)


def iterate(data: ArrayDataset, batch_size: int, *, stored: bool = False):
  """All of ``data`` in stored order, in padded batches (for evaluation; ``stored``: see
  :func:`gather`)."""
  for start in range(0, len(data), batch_size):
    yield gather(data, np.arange(start, min(start + batch_size, len(data))), batch_size,
                 stored=stored)
