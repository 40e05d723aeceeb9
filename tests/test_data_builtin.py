"""TFDS's built-in builders offline, and the project's own builders without TensorFlow.

The real ``cifar10`` builder prepares a small archive in the official binary format (1 label byte
+ 3,072 bytes CHW per record) cut from the real photos that scikit-learn ships; the only
substitute is the checksum TFDS registers for the archive's URL, replaced by the small
archive's own (what ``--register_checksums`` would record), so nothing is downloaded.
"""

import io
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from unlearn_jax.data.datasets import load_dataset

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
PER_TRAIN_FILE, NUM_TEST = 2, 4


def _real_patches(count: int) -> np.ndarray:
  """``count`` 32×32×3 uint8 crops (HWC) from scikit-learn's two sample photos."""
  from sklearn.datasets import load_sample_images
  photos = load_sample_images().images
  rng = np.random.default_rng(0)
  patches = []
  for k in range(count):
    photo = photos[k % len(photos)]
    y, x = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
    patches.append(photo[y:y + 32, x:x + 32])
  return np.stack(patches)


def _write_cifar10_archive(folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Writes ``cifar-10-binary.tar.gz`` into ``folder``; returns split -> (HWC images, labels).

  Labels cycle 0..9 over train then test records, so within a split every label is unique.
  """
  num_train = PER_TRAIN_FILE * len(TRAIN_FILES)
  images = _real_patches(num_train + NUM_TEST)
  labels = np.arange(len(images), dtype=np.uint8) % 10
  chunks = [slice(i * PER_TRAIN_FILE, (i + 1) * PER_TRAIN_FILE) for i in range(len(TRAIN_FILES))]
  files = {**dict(zip(TRAIN_FILES, chunks, strict=True)),
           "test_batch.bin": slice(num_train, None)}
  with tarfile.open(folder / CIFAR10_ARCHIVE, "w:gz") as tar:

    def add(name: str, data: bytes) -> None:
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))

    add("batches.meta.txt", "".join(f"{c}\n" for c in CIFAR10_CLASSES).encode())
    for name, rows in files.items():
      add(name, b"".join(bytes([label]) + image.transpose(2, 0, 1).tobytes()
                         for label, image in zip(labels[rows], images[rows], strict=True)))
  return {"train": (images[:num_train], labels[:num_train]),
          "test": (images[num_train:], labels[num_train:])}


@pytest.fixture
def cifar10_archive(tmp_path):
  pytest.importorskip("tensorflow")
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  return manual_dir, _write_cifar10_archive(manual_dir)


@pytest.fixture
def register_archive_checksum(monkeypatch):
  """Registers a local archive's size and checksum for the CIFAR-10 URL, for this test only."""

  def register(path):
    infos = {CIFAR10_URL: tfds.core.download.checksums.compute_url_info(path)}
    monkeypatch.setattr(tfds.builder_cls("cifar10"), "url_infos", infos)

  return register


# Hides tensorflow from every import finder, as if it were not installed: `import tensorflow`
# raises ModuleNotFoundError and `importlib.util.find_spec("tensorflow")` is None. (Setting
# `sys.modules["tensorflow"] = None` would not do: etils, and so TFDS, then take TF as loaded.)
_NO_TENSORFLOW = """
import sys

class HideTensorFlow:
  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "tensorflow":
      return None
    return self.finder.find_spec(name, path, target)

  def __getattr__(self, attr):
    return getattr(self.finder, attr)

sys.meta_path[:] = [HideTensorFlow(f) for f in sys.meta_path]
"""


def _run_without_tensorflow(code: str) -> str:
  """Runs ``code`` in a fresh interpreter where ``import tensorflow`` fails; its last output
  line (TFDS prints progress before it)."""
  result = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.splitlines()[-1]


def test_cifar10_real_builder_prepares_offline_from_manual_dir(
    tmp_path, cifar10_archive, register_archive_checksum):
  manual_dir, written = cifar10_archive
  register_archive_checksum(manual_dir / CIFAR10_ARCHIVE)
  data_dir = tmp_path / "tfds"

  ds = load_dataset("cifar10", data_dir=data_dir, manual_dir=manual_dir)

  assert ds.class_names == CIFAR10_CLASSES
  assert ds.image_shape == (32, 32, 3)
  assert ds.mean == (0.485, 0.456, 0.406)
  for split, (images, labels) in written.items():
    got = getattr(ds, split)
    assert got.images.shape == (len(labels), 32, 32, 3) and got.images.dtype == np.float32
    assert got.labels.dtype == np.int32
    assert 0.0 <= got.images.min() and got.images.max() <= 1.0
    order = np.argsort(got.labels)  # TFDS shuffles records; labels are unique within a split.
    np.testing.assert_array_equal(got.labels[order], np.sort(labels))
    np.testing.assert_array_equal(np.round(got.images[order] * 255), images[np.argsort(labels)])
  assert (data_dir / "downloads" / "extracted").is_dir()  # Extracted from manual_dir's archive.

  # Prepared data is read back (PNG-decoded by PIL) without TensorFlow.
  out = _run_without_tensorflow(f"""
      from unlearn_jax.data.datasets import load_dataset
      ds = load_dataset("cifar10", data_dir={str(data_dir)!r})
      print(len(ds.train), len(ds.test), ds.train.images.sum())
  """)
  assert out.split() == [str(len(written["train"][1])), str(len(written["test"][1])),
                         str(ds.train.images.sum())]


def test_cifar10_manual_archive_must_match_registered_checksum(tmp_path, cifar10_archive):
  manual_dir, _ = cifar10_archive
  with pytest.raises(NonMatchingChecksumError, match="wrong checksum"):
    load_dataset("cifar10", data_dir=tmp_path / "tfds", manual_dir=manual_dir)


@pytest.mark.parametrize("with_manual_dir", [False, True])
def test_builtin_without_data_fails_before_preparing(tmp_path, monkeypatch, with_manual_dir):
  pytest.importorskip("tensorflow")

  def no_prepare(*args, **kwargs):
    raise AssertionError("download_and_prepare reached: it would try the network")

  monkeypatch.setattr(tfds.builder_cls("cifar10"), "download_and_prepare", no_prepare)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=f"{CIFAR10_ARCHIVE}.*download=True"):
    load_dataset("cifar10", data_dir=tmp_path / "tfds",
                 manual_dir=empty if with_manual_dir else None)


def test_project_builder_needs_no_tensorflow(tmp_path):
  out = _run_without_tensorflow(f"""
      try:
        import tensorflow
      except ModuleNotFoundError:
        pass
      else:
        raise SystemExit("tensorflow is importable")
      from unlearn_jax.data.datasets import load_dataset
      ds = load_dataset("digits", data_dir={str(tmp_path / "tfds")!r})
      print(len(ds.train), len(ds.test), *ds.image_shape, "tensorflow" in sys.modules)
  """)
  assert out.split() == ["1437", "360", "8", "8", "1", "False"]
