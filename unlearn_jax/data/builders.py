"""Project-owned TFDS builders over real data that ships offline; they need no TensorFlow.

Both write ``array_record`` files that :func:`tensorflow_datasets.data_source` reads back.

* ``unlearn_digits``: scikit-learn's 1,797 real 8×8 handwritten digits. The source has no
  official split, so the builder fixes a stratified 1,437 / 360 train / test split (seed 0).
  Pixel values 0..16 are stored as uint8 0..255 (×255/16, exact for all 17 levels).
* ``unlearn_fashion_mnist``: the 70,000 Fashion-MNIST images from their IDX files, by default
  those of Debian's ``dataset-fashion-mnist`` package, or any folder holding the same four files.
"""

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from unlearn_jax.data.idx import read_idx

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
DIGITS_TEST_SIZE = 360


def _features(shape: tuple[int, int, int], class_names) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
      "label": tfds.features.ClassLabel(names=list(class_names)),
  })


class UnlearnDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's real 8×8 digits, split 1,437 / 360 (stratified, seed 0)."""

  name = "unlearn_digits"
  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="scikit-learn load_digits: 1,797 real 8x8 handwritten digits (UCI).",
        features=_features((8, 8, 1), [str(d) for d in range(10)]),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # Keep the source order.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    index = np.arange(len(images))
    train, test = train_test_split(
        index, test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=0)
    return {
        "train": self._generate_examples(images, digits.target, np.sort(train)),
        "test": self._generate_examples(images, digits.target, np.sort(test)),
    }

  def _generate_examples(self, images, labels, index):
    for i in index:
      yield int(i), {"image": images[i], "label": int(labels[i])}


def find_idx_file(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
  """``folder/stem`` or ``folder/stem.gz``, whichever exists first; None if neither does."""
  for candidate in (folder / stem, folder / f"{stem}.gz"):
    if candidate.exists():
      return candidate
  return None


def missing_fashion_mnist_message(folder: pathlib.Path) -> str:
  """The error text for Fashion-MNIST IDX files missing from ``folder``: what and how to install."""
  return (
      f"Fashion-MNIST IDX files not found in {folder} (need "
      f"{', '.join(s for pair in FASHION_MNIST_FILES.values() for s in pair)}, optionally .gz). "
      "Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass "
      "source_dir= a folder holding the four files from github.com/zalandoresearch/fashion-mnist."
  )


class UnlearnFashionMnist(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (60,000 train / 10,000 test, 28×28 grey) from local IDX files."""

  name = "unlearn_fashion_mnist"
  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
    self._source_dir = pathlib.Path(source_dir or DEBIAN_FASHION_MNIST_DIR)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Xiao et al., 2017) read from its IDX files.",
        features=_features((28, 28, 1), FASHION_MNIST_CLASSES),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # Keep the source order.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Read from local files only.
    return {split: self._generate_examples(*self._read(split)) for split in FASHION_MNIST_FILES}

  def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    paths = [find_idx_file(self._source_dir, stem) for stem in FASHION_MNIST_FILES[split]]
    if None in paths:
      raise FileNotFoundError(missing_fashion_mnist_message(self._source_dir))
    images, labels = (read_idx(p) for p in paths)
    return images[..., None], labels

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
      yield i, {"image": image, "label": int(label)}
