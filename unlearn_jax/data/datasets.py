"""Datasets as in-memory arrays, loaded through TFDS.

Every dataset comes in through a TFDS builder that writes ``array_record`` files and is read back
with ``tfds.data_source`` into NumPy arrays once: images float32 in [0, 1], shape [N, H, W, C];
labels int32. Small image datasets are then batched by index (see :mod:`batching`).

Names:
  ``digits``, ``fashion_mnist``: the project's own builders (:mod:`builders`): offline, no TF.
  ``cifar10``, ``cifar100``, ``svhn_cropped``, ``mnist``, ``tfds/fashion_mnist``: TFDS's
  built-in builders; preparing them needs TensorFlow (``pip install unlearn_jax[tf]``) and
  network access (``download=True``) or the original archives in ``manual_dir``.
"""

import dataclasses
import os
import pathlib

import numpy as np

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


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """Images float32 [N, H, W, C] in [0, 1] and int32 labels [N].

  Raises ValueError on construction for images and labels of different lengths, images that are
  not floats (uint8 pixels: pass ``images.astype(np.float32) / 255``), NaN or infinite images, or
  labels that are not ints. The range [0, 1] is checked where a dataset is built
  (:class:`Dataset`): methods' own sets (e.g. UNSIR's noise) may leave it.
  """

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    images, labels = np.asarray(self.images), np.asarray(self.labels)
    if len(images) != len(labels):
      raise ValueError(f"ArrayDataset: {len(images)} images but {len(labels)} labels; give one "
                       "label per image.")
    if not np.issubdtype(images.dtype, np.floating):
      raise ValueError(f"ArrayDataset: images are {images.dtype}; expected floats in [0, 1] "
                       "(for uint8 pixels pass images.astype(np.float32) / 255).")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"ArrayDataset: labels are {labels.dtype}; expected int class ids.")
    if images.size and not np.isfinite(self.pixel_range()).all():
      raise ValueError(f"ArrayDataset: images contain NaN or infinite values "
                       f"(range {self.pixel_range()}); expected finite floats in [0, 1].")

  def pixel_range(self) -> tuple[float, float]:
    """(smallest, largest) pixel value; NaN if any is NaN."""
    return float(np.min(self.images)), float(np.max(self.images))

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, index: np.ndarray) -> "ArrayDataset":
    return ArrayDataset(self.images[index], self.labels[index])


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
      low, high = getattr(self, split).pixel_range() if len(getattr(self, split)) else (0, 0)
      if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"dataset {self.name!r}: {split} images range over [{low}, {high}]; "
                         "expected [0, 1] (divide 0..255 pixels by 255).")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train.images.shape[1:])


def _read_split(source) -> ArrayDataset:
  records = source.__getitems__(range(len(source)))
  images = np.stack([r["image"] for r in records])
  labels = np.asarray([r["label"] for r in records], dtype=np.int32)
  return ArrayDataset(images.astype(np.float32) / 255.0, labels)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel (mean, std) of images [N, H, W, C], rounded to 4 decimals."""
  mean = images.mean(axis=(0, 1, 2), dtype=np.float64)
  std = images.std(axis=(0, 1, 2), dtype=np.float64)
  return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


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
) -> Dataset:
  """Prepares (once) and loads a dataset into memory.

  Args:
    name: one of :data:`DATASET_NAMES`.
    data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets`` or $TFDS_DATA_DIR).
    source_dir: for ``fashion_mnist``, a folder with the four IDX files (default: Debian's).
    manual_dir: for built-in datasets, a folder holding the original archive(s), checked against
      TFDS's registered checksums (see :func:`_prepare_builtin`).
    download: allow built-in datasets to be downloaded.

  Raises:
    ValueError: unknown ``name``.
    FileNotFoundError: the source files are missing (the message says how to get them).
    ImportError: a built-in dataset must be prepared and TensorFlow is not installed.
    NonMatchingChecksumError: (TFDS's) an archive in ``manual_dir`` is not the published one.
  """
  from unlearn_jax.data import builders  # imports TFDS (about 2 s): only when data is loaded

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
  train, test = _read_split(sources["train"]), _read_split(sources["test"])
  mean, std = stats if stats else channel_stats(train.images)
  class_names = tuple(builder.info.features["label"].names)
  return Dataset(name, train, test, class_names, tuple(mean), tuple(std))
