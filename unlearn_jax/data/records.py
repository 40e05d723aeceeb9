"""Images read by index from TFDS's ``array_record`` files, for datasets larger than memory.

:class:`RecordImages` stands where an in-memory dataset keeps its uint8 pixel array: indexing it
reads those records (``tfds.data_source`` random access) and nothing else, and a subset is a view
of row numbers, so splits, subsets and streams never read the whole dataset. A batch of it stays
a view until it is placed on devices: :func:`unlearn_jax.training.sharding.shard_leading` then
reads, in each process, only the rows of that process's own devices.
"""

from collections.abc import Sequence

import numpy as np


class RecordImages:
  """uint8 images [N, H, W, C]: rows ``index`` of a TFDS data source, read on demand.

  ``x[i]`` (an int array, a slice, or a tuple whose first item selects rows) reads those records
  into a NumPy array; ``x.subset(i)`` is a view (nothing read); ``np.asarray(x)`` reads them all.

  Args:
    source: a TFDS data source (``builder.as_data_source()[split]``): ``len`` and
      ``__getitems__(indices) -> [{"image": uint8 [H, W, C], ...}]``.
    index: the source rows this view holds, in order (default: all).
  """

  dtype = np.dtype(np.uint8)

  def __init__(self, source, index: np.ndarray | None = None):
    self.source = source
    self.index = np.arange(len(source)) if index is None else np.asarray(index, np.int64)
    self._image_shape = tuple(np.shape(source[0]["image"])) if len(source) else ()

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.index), *self._image_shape)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return len(self.index)

  def __repr__(self) -> str:
    return f"RecordImages(shape={self.shape}, source={self.source!r})"

  def _view(self, rows: np.ndarray) -> "RecordImages":
    view = RecordImages.__new__(RecordImages)
    view.source, view.index, view._image_shape = self.source, rows, self._image_shape
    return view

  def subset(self, index) -> "RecordImages":
    """The rows ``index`` of this view, as a view."""
    return self._view(self.index[index])

  @staticmethod
  def concatenate(views: Sequence["RecordImages"]) -> "RecordImages | None":
    """The rows of ``views`` one after another, as a view; None unless all read one source."""
    if not all(isinstance(v, RecordImages) and v.source is views[0].source for v in views):
      return None
    return views[0]._view(np.concatenate([v.index for v in views]))

  def __getitem__(self, index) -> np.ndarray:
    rest = ()
    if isinstance(index, tuple):
      index, rest = index[0], index[1:]
    rows = self.index[index]
    if rows.ndim == 0:
      return np.asarray(self.source[int(rows)]["image"])[rest]
    if len(rows) == 0:
      return np.zeros((0, *self._image_shape), np.uint8)[(slice(None), *rest)]
    records = self.source.__getitems__(rows.tolist())
    return np.stack([r["image"] for r in records])[(slice(None), *rest)]

  def __array__(self, dtype=None, copy=None):
    del copy  # Always a fresh array.
    out = self[:]
    return out if dtype is None else out.astype(dtype)
