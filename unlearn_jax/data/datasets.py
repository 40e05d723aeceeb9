"""Datasets as arrays, loaded through TFDS.

Every dataset comes in through a TFDS builder that writes ``array_record`` files and is read back
with ``tfds.data_source``: into memory once, as uint8 pixels (a quarter of the bytes of float32
images), or, for a dataset larger than memory, read by index on demand (:mod:`records`). Images
are floats in [0, 1], shape [N, H, W, C], at every API boundary: a uint8 pixel p reads as p/255
(float32), bit-identical to ``p.astype(np.float32) / 255``, on the host or inside a jitted step
(:func:`pixels_to_float`); labels are int32. Batches are gathered by index (see :mod:`batching`).

Names:
  ``digits``, ``fashion_mnist``: the project's own builders (:mod:`builders`): offline, no TF.
  ``cifar10``, ``cifar100``, ``svhn_cropped``, ``mnist``, ``tfds/fashion_mnist``: TFDS's
  built-in builders; preparing them needs TensorFlow (``pip install unlearn_jax[tf]``) and
  network access (``download=True``) or the original archives in ``manual_dir``.
"""

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.records import RecordImages

# name -> the project's builder class in :mod:`builders`, imported with TFDS when data is loaded.
PROJECT_BUILDERS = {"digits": "UnlearnDigits", "fashion_mnist": "UnlearnFashionMnist"}

# name -> (TFDS name, channel mean, channel std). CIFAR-10 uses the ImageNet statistics, as the
# Spotter reference code does; the others use their own training-set statistics.
BUILTIN = {
    "cifar10": ("cifar10", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar100": ("cifar100", (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "svhn_cropped": ("svhn_cropped", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ("mnist", (0.1307,), (0.3081,)),
    "tfds/fashion_mnist": ("fashion_mnist", (0.2860,), (0.3530,)),
}
DATASET_NAMES = (*PROJECT_BUILDERS, *BUILTIN)


# What each uint8 pixel p reads as: p/255 rounded as NumPy rounds it. Looked up inside jitted
# programs: XLA turns a division by 255 into a product with 1/255, which rounds 126 of the 256
# values differently, so a lookup keeps device floats bit-identical to host floats.
PIXEL_VALUES = np.arange(256, dtype=np.float32) / 255.0


def pixels_to_float(images):
  """Images as floats in [0, 1]: uint8 pixels p become p/255 (float32), floats pass unchanged.

  NumPy arrays convert on the host, JAX arrays (and tracers inside jit) by a lookup in
  :data:`PIXEL_VALUES`; both are bit-identical to ``p.astype(np.float32) / 255``.

  >>> pixels_to_float(np.array([0, 51, 255], np.uint8))
  array([0. , 0.2, 1. ], dtype=float32)
  """
  if np.issubdtype(images.dtype, np.floating):
    return images
  if isinstance(images, np.ndarray):
    return images.astype(np.float32) / 255.0
  return jnp.asarray(PIXEL_VALUES)[images]


def _check_labels(labels, n: int) -> None:
  if n != len(labels):
    raise ValueError(f"ArrayDataset: {n} images but {len(labels)} labels; give one "
                     "label per image.")
  if len(labels) and not np.issubdtype(np.asarray(labels).dtype, np.integer):
    raise ValueError(f"ArrayDataset: labels are {np.asarray(labels).dtype}; expected int class "
                     "ids.")


@dataclasses.dataclass(frozen=True, init=False, eq=False)
class ArrayDataset:
  """Images in [0, 1] [N, H, W, C] and int labels [N].

  ``ArrayDataset(images, labels)`` keeps float images as given. :meth:`from_pixels` keeps uint8
  pixels instead (a quarter of the bytes; every loaded dataset is kept so), in memory or read by
  index from records (:class:`~unlearn_jax.data.records.RecordImages`). ``images`` is always the
  float view, made on access for pixels (take a :meth:`subset` first); ``stored`` is what is
  kept, and what the executor's batches carry into the jitted step, which converts it there
  (:func:`pixels_to_float`).

  Raises ValueError on construction for images and labels of different lengths, float images
  that are not floats (uint8 pixels: pass ``images.astype(np.float32) / 255`` or use
  :meth:`from_pixels`), NaN or infinite images, or labels that are not ints. The range [0, 1] is
  checked where a dataset is built (:class:`Dataset`): methods' own sets (e.g. UNSIR's noise)
  may leave it.
  """

  stored: Any
  labels: np.ndarray

  def __init__(self, images, labels):
    array = np.asarray(images)
    _check_labels(labels, len(array))
    if not np.issubdtype(array.dtype, np.floating):
      raise ValueError(f"ArrayDataset: images are {array.dtype}; expected floats in [0, 1] "
                       "(for uint8 pixels pass images.astype(np.float32) / 255).")
    object.__setattr__(self, "stored", images)
    object.__setattr__(self, "labels", labels)
    if array.size and not np.isfinite(self.pixel_range()).all():
      raise ValueError(f"ArrayDataset: images contain NaN or infinite values "
                       f"(range {self.pixel_range()}); expected finite floats in [0, 1].")

  @classmethod
  def from_pixels(cls, pixels, labels) -> "ArrayDataset":
    """A dataset kept as uint8 ``pixels`` [N, H, W, C] (an array, or images read by index),
    whose images are pixels / 255.

    Raises:
      ValueError: pixels that are not uint8, or labels as in the constructor.
    """
    if np.dtype(pixels.dtype) != np.uint8:
      raise ValueError(f"ArrayDataset.from_pixels: pixels are {pixels.dtype}; expected uint8 "
                       "0..255 (for floats in [0, 1] use ArrayDataset(images, labels)).")
    _check_labels(labels, len(pixels))
    data = cls.__new__(cls)
    object.__setattr__(data, "stored", pixels)
    object.__setattr__(data, "labels", labels)
    return data

  @property
  def is_pixels(self) -> bool:
    """Whether the images are kept as uint8 pixels."""
    return np.dtype(self.stored.dtype) == np.uint8

  @property
  def images(self) -> np.ndarray:
    """The images as floats in [0, 1] (for pixels, a float32 copy made on each access)."""
    return pixels_to_float(np.asarray(self.stored)) if self.is_pixels else self.stored

  @property
  def image_shape(self) -> tuple[int, ...]:
    """(H, W, C)."""
    return tuple(self.stored.shape[1:])

  def pixel_range(self) -> tuple[float, float]:
    """(smallest, largest) pixel value; NaN if any is NaN."""
    if self.is_pixels:
      stored = np.asarray(self.stored)
      return float(PIXEL_VALUES[stored.min()]), float(PIXEL_VALUES[stored.max()])
    return float(np.min(self.stored)), float(np.max(self.stored))

  def __len__(self) -> int:
    return len(self.labels)

  def _like(self, stored, labels) -> "ArrayDataset":
    return ArrayDataset.from_pixels(stored, labels) if self.is_pixels else ArrayDataset(
        stored, labels)

  def stored_rows(self, index: np.ndarray):
    """The stored images at ``index``: a view for images read by index, else a copy."""
    return self.stored.subset(index) if hasattr(self.stored, "subset") else self.stored[index]

  def subset(self, index: np.ndarray) -> "ArrayDataset":
    """The examples at ``index``, kept as this dataset keeps them."""
    return self._like(self.stored_rows(index), self.labels[index])

  def with_labels(self, labels: np.ndarray) -> "ArrayDataset":
    """The same images with other ``labels``."""
    return self._like(self.stored, labels)

  @staticmethod
  def concatenate(datasets: Sequence["ArrayDataset"]) -> "ArrayDataset":
    """The examples of ``datasets`` one after another: pixels if all keep pixels in memory (or
    all read one source by index), else float images."""
    labels = np.concatenate([d.labels for d in datasets])
    stored = [d.stored for d in datasets]
    if all(d.is_pixels for d in datasets):
      if all(isinstance(s, np.ndarray) for s in stored):
        return ArrayDataset.from_pixels(np.concatenate(stored), labels)
      joined = type(stored[0]).concatenate(stored) if hasattr(stored[0], "concatenate") else None
      if joined is not None:
        return ArrayDataset.from_pixels(joined, labels)
    return ArrayDataset(np.concatenate([d.images for d in datasets]), labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset's train and test arrays with what a model needs to know about them."""

  name: str
  train: ArrayDataset
  test: ArrayDataset
  class_names: tuple[str, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __post_init__(self):
    for split in ("train", "test"):
      data = getattr(self, split)
      if data.is_pixels:  # p/255 ∈ [0, 1] for every uint8 p
        continue
      low, high = data.pixel_range() if len(data) else (0, 0)
      if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"dataset {self.name!r}: {split} images range over [{low}, {high}]; "
                         "expected [0, 1] (divide 0..255 pixels by 255).")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.train.image_shape


STORAGES = ("auto", "memory", "records")
READ_CHUNK = 4096  # records per read when a split is passed over once


def _chunks(source):
  for start in range(0, len(source), READ_CHUNK):
    yield source.__getitems__(range(start, min(start + READ_CHUNK, len(source))))


def _read_split(source, in_memory: bool, counts: np.ndarray | None) -> ArrayDataset:
  """A split as uint8 pixels, in memory or read by index; adds each channel's pixel histogram
  to ``counts`` [C, 256] when given."""
  images, labels = [], []
  for records in _chunks(source):
    pixels = np.stack([r["image"] for r in records])
    labels.append(np.asarray([r["label"] for r in records], dtype=np.int32))
    if counts is not None:
      for c in range(pixels.shape[-1]):
        counts[c] += np.bincount(pixels[..., c].ravel(), minlength=256)
    if in_memory:
      images.append(pixels)
  labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
  if in_memory:
    return ArrayDataset.from_pixels(np.concatenate(images), labels)
  return ArrayDataset.from_pixels(RecordImages(source), labels)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel (mean, std) of images [N, H, W, C], rounded to 4 decimals."""
  mean = images.mean(axis=(0, 1, 2), dtype=np.float64)
  std = images.std(axis=(0, 1, 2), dtype=np.float64)
  return _rounded(mean, std)


def pixel_stats(counts: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """:func:`channel_stats` of the images p/255 from their pixels' histograms [C, 256] (one pass,
  nothing kept in memory)."""
  values = PIXEL_VALUES.astype(np.float64)
  n = counts.sum(axis=1)
  mean = counts @ values / n
  std = np.sqrt((counts * (values[None] - mean[:, None]) ** 2).sum(axis=1) / n)
  return _rounded(mean, std)


def _rounded(mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
  return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def memory_budget() -> int:
  """The default budget for datasets kept in memory: a quarter of the host's physical memory
  (bytes)."""
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def check_storage(storage: str, budget_gib: float | None) -> None:
  """Raises ValueError for a ``storage`` not in :data:`STORAGES` or a negative budget."""
  if storage not in STORAGES:
    raise ValueError(f"data.storage: {storage!r}; allowed: {', '.join(STORAGES)}.")
  if budget_gib is not None and not budget_gib >= 0:
    raise ValueError(f"data.memory_budget_gib: {budget_gib}; must be ≥ 0 (None: a quarter of "
                     "the host's memory).")


def _in_memory(builder, storage: str, budget_gib: float | None) -> bool:
  """Whether to keep the dataset in memory: ``storage`` "memory", or "auto" and its uint8 pixels
  (train and test) within the budget."""
  if storage != "auto":
    return storage == "memory"
  info = builder.info
  size = sum(s.num_examples for s in info.splits.values()) * int(
      np.prod(info.features["image"].shape))
  return size <= (memory_budget() if budget_gib is None else budget_gib * 2**30)


def _prepare_builtin(tfds_name: str, data_dir, manual_dir, download: bool):
  """TFDS's own builder for ``tfds_name``, prepared once as ``array_record`` files.

  The builder fetches its files with TFDS's download manager, which looks in ``manual_dir``
  first, for each file the name TFDS registers for its URL (``builder.url_infos``, e.g.
  ``cifar-10-binary.tar.gz``), and downloads a missing one only with ``download=True``. Every
  file, found in ``manual_dir`` or downloaded, must match the size and SHA-256 checksum that
  TFDS registers for its URL, so ``manual_dir`` must hold the original archives as published;
  a re-packed copy fails with TFDS's ``NonMatchingChecksumError``. With ``download=False``
  the files are checked for before preparing starts, so a missing one fails at once rather
  than falling through to a download that retries for minutes offline. Nothing comes from TFDS's
  GCS bucket (``try_download_gcs=False``): it holds TFRecord copies, and these files are built
  here.
  """
  import tensorflow_datasets as tfds

  builder = tfds.builder(tfds_name, data_dir=data_dir, file_format="array_record")
  if builder.is_prepared():
    return builder
  try:
    import tensorflow  # noqa: F401  (TFDS's built-in builders need it to prepare data)
  except ImportError as e:
    raise ImportError(
        f"Preparing the built-in TFDS dataset '{tfds_name}' needs TensorFlow: "
        "pip install 'unlearn_jax[tf]'.") from e
  if not download:
    files = sorted(info.filename for info in builder.url_infos.values())
    folder = pathlib.Path(manual_dir) if manual_dir is not None else None
    missing = [f for f in files if folder is None or not (folder / f).exists()]
    if missing:
      where = (f"manual_dir {folder} lacks {', '.join(missing)}" if folder else
               f"no manual_dir holds its original {', '.join(files)}")
      raise FileNotFoundError(
          f"dataset '{tfds_name}' is not prepared in {builder.data_dir}, and {where}. Pass "
          f"download=True (needs network access) or manual_dir= a folder holding "
          f"{', '.join(files)}.")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    download: bool = False,
    storage: str = "auto",
    memory_budget_gib: float | None = None,
) -> Dataset:
  """Prepares (once) and loads a dataset, as uint8 pixels in memory or read by index.

  Args:
    name: one of :data:`DATASET_NAMES`.
    data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets`` or $TFDS_DATA_DIR).
    source_dir: for ``fashion_mnist``, a folder with the four IDX files (default: Debian's).
    manual_dir: for built-in datasets, a folder holding the original archive(s), checked against
      TFDS's registered checksums (see :func:`_prepare_builtin`).
    download: allow built-in datasets to be downloaded.
    storage: "memory" (read once into memory), "records" (read by index from the array_record
      files on demand: :class:`~unlearn_jax.data.records.RecordImages`; labels are kept in
      memory) or "auto": in memory if its pixels fit ``memory_budget_gib``. Either way a batch
      is the same.
    memory_budget_gib: the budget of "auto" (None: :func:`memory_budget`).

  Raises:
    ValueError: unknown ``name`` or ``storage``, or a negative budget.
    FileNotFoundError: the source files are missing (the message says how to get them).
    ImportError: a built-in dataset must be prepared and TensorFlow is not installed.
    NonMatchingChecksumError: (TFDS's) an archive in ``manual_dir`` is not the published one.
  """
  from unlearn_jax.data import builders  # imports TFDS (about 2 s): only when data is loaded

  check_storage(storage, memory_budget_gib)
  if name in PROJECT_BUILDERS:
    kwargs = {"source_dir": source_dir} if name == "fashion_mnist" else {}
    if name == "fashion_mnist" and source_dir is not None:
      folder = pathlib.Path(source_dir)
      if any(builders.find_idx_file(folder, s) is None
             for pair in builders.FASHION_MNIST_FILES.values() for s in pair):
        raise FileNotFoundError(builders.missing_fashion_mnist_message(folder))
    builder = getattr(builders, PROJECT_BUILDERS[name])(data_dir=data_dir,
                                                        file_format="array_record", **kwargs)
    if not builder.is_prepared():
      builder.download_and_prepare()
    stats = None
  elif name in BUILTIN:
    tfds_name, *stats = BUILTIN[name]
    builder = _prepare_builtin(tfds_name, data_dir, manual_dir, download)
  else:
    raise ValueError(f"dataset: unknown name {name!r}; known: {', '.join(DATASET_NAMES)}.")
  sources = builder.as_data_source()
  in_memory = _in_memory(builder, storage, memory_budget_gib)
  channels = builder.info.features["image"].shape[-1]
  counts = None if stats else np.zeros((channels, 256), np.int64)
  train = _read_split(sources["train"], in_memory, counts)
  test = _read_split(sources["test"], in_memory, None)
  mean, std = stats if stats else pixel_stats(counts)
  class_names = tuple(builder.info.features["label"].names)
  return Dataset(name, train, test, class_names, tuple(mean), tuple(std))
