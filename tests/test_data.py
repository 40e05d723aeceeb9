"""Data: real datasets through TFDS builders, forget specs and splits, batching by index."""

import gzip
import pathlib

import jax
import numpy as np
import pytest

from unlearn_jax.data import builders
from unlearn_jax.data.batching import Stream, gather
from unlearn_jax.data.datasets import ArrayDataset, load_dataset, pixels_to_float
from unlearn_jax.data.idx import read_idx
from unlearn_jax.data.records import RecordImages
from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.training import sharding


def test_digits_is_real_and_split_stratified(digits):
  from sklearn.datasets import load_digits
  assert digits.train.images.shape == (1437, 8, 8, 1)
  assert digits.test.images.shape == (360, 8, 8, 1)
  assert digits.train.images.dtype == np.float32
  assert 0.0 <= digits.train.images.min() and digits.train.images.max() == 1.0
  assert np.abs(np.bincount(digits.test.labels) - 36).max() <= 1  # stratified
  # Every stored image is one of scikit-learn's, at its original 17 grey levels.
  source = {tuple(img.ravel().astype(int)) for img in load_digits().images}
  stored = np.round(digits.test.images.reshape(360, -1) * 16).astype(int)
  assert all(tuple(row) in source for row in stored)


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_bad_magic(tmp_path):
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  _write_idx(tmp_path / "a.gz", array)
  np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
  with pytest.raises(ValueError, match="not an IDX file"):
    read_idx(tmp_path / "bad")


@pytest.fixture(scope="module")
def fashion_idx_dir(tmp_path_factory):
  """The first 200 train / 100 test images of the real Fashion-MNIST files, as a user folder."""
  src = pathlib.Path(builders.DEBIAN_FASHION_MNIST_DIR)
  out = tmp_path_factory.mktemp("fashion_idx")
  for split, n in (("train", 200), ("test", 100)):
    images, labels = builders.FASHION_MNIST_FILES[split]
    _write_idx(out / f"{images}.gz", read_idx(src / f"{images}.gz")[:n])
    _write_idx(out / f"{labels}.gz", read_idx(src / f"{labels}.gz")[:n])
  return out


def test_fashion_mnist_from_a_user_folder(fashion_idx_dir, tmp_path):
  data = load_dataset("fashion_mnist", data_dir=str(tmp_path), source_dir=fashion_idx_dir)
  assert data.train.images.shape == (200, 28, 28, 1) and len(data.test) == 100
  expected = read_idx(fashion_idx_dir / "train-images-idx3-ubyte.gz")[:, :, :, None] / 255.0
  np.testing.assert_allclose(data.train.images, expected, atol=1e-7)
  assert data.class_names[9] == "ankle boot"


def test_missing_files_say_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    load_dataset("fashion_mnist", data_dir=str(tmp_path), source_dir=tmp_path / "nothing")


def test_unknown_dataset_lists_known_ones():
  with pytest.raises(ValueError, match="dataset: unknown name 'cifar11'.*digits"):
    load_dataset("cifar11")


def test_class_splits_are_disjoint_cover_and_pick_the_classes(digits):
  splits = make_splits(digits, ForgetSpec(classes=(0, 3)), seed=0)
  assert set(np.unique(splits.forget.labels)) == {0, 3}
  assert not set(np.unique(splits.retain.labels)) & {0, 3}
  assert np.intersect1d(splits.forget_idx, splits.retain_idx).size == 0
  assert np.union1d(splits.forget_idx, splits.retain_idx).size == len(digits.train)
  assert set(np.unique(splits.test_forget.labels)) == {0, 3}
  assert len(splits.test_forget) + len(splits.test_retain) == len(digits.test)
  assert np.isin(splits.calibration_idx, splits.test_retain_idx).all()
  assert len(splits.calibration) + len(splits.test_heldout) == len(splits.test_retain)
  assert splits.kept_classes == (1, 2, 4, 5, 6, 7, 8, 9)


def test_random_fraction_is_stratified_and_seeded(digits):
  spec = ForgetSpec(fraction=0.1)
  a, b = make_splits(digits, spec, seed=1), make_splits(digits, spec, seed=1)
  c = make_splits(digits, spec, seed=2)
  np.testing.assert_array_equal(a.forget_idx, b.forget_idx)
  assert not np.array_equal(a.forget_idx, c.forget_idx)
  counts = np.bincount(a.forget.labels, minlength=10)
  expected = np.round(0.1 * np.bincount(digits.train.labels))
  np.testing.assert_array_equal(counts, expected)
  assert len(a.test_forget) == 0 and len(a.test_retain) == len(digits.test)
  unstratified = make_splits(digits, ForgetSpec(fraction=0.1, stratified=False), seed=1)
  assert len(unstratified.forget) == round(0.1 * len(digits.train))


def test_explicit_indices(digits):
  splits = make_splits(digits, ForgetSpec(indices=(5, 1, 9)), seed=0)
  np.testing.assert_array_equal(splits.forget_idx, [1, 5, 9])


@pytest.mark.parametrize("spec, message", [
    (ForgetSpec(classes=(10,)), r"forget.classes: class ids \[10\] out of range; allowed 0..9"),
    (ForgetSpec(classes=tuple(range(10))), "all 10 classes would be forgotten"),
    (ForgetSpec(), "empty forget set is not allowed"),
    (ForgetSpec(fraction=1.5), r"forget.fraction: 1.5 is outside \(0, 1\)"),
    (ForgetSpec(fraction=0.0), r"forget.fraction: 0.0 is outside \(0, 1\)"),
    (ForgetSpec(classes=(1,), fraction=0.2), "exactly one of"),
    (ForgetSpec(indices=(0, 5000)), "forget.indices: must lie in 0..1436"),
])
def test_bad_forget_specs_name_the_field(digits, spec, message):
  with pytest.raises(ValueError, match=message):
    make_splits(digits, spec, seed=0)


def test_stream_epochs_cover_every_example_once(digits):
  stream = Stream(digits.train, 100, seed=3, name="train")
  assert stream.steps_per_epoch == 15
  for epoch in range(2):
    seen = []
    for i in range(stream.steps_per_epoch):
      b = stream.batch(epoch * stream.steps_per_epoch + i)
      assert b["image"].shape == (100, 8, 8, 1)
      seen += [tuple(x.ravel()) for x, m in zip(b["image"], b["mask"], strict=True) if m]
    assert len(seen) == len(digits.train)
  last = stream.batch(14)
  assert last["mask"].sum() == 37 and last["mask"][37:].sum() == 0
  # A batch is a function of (seed, name, step): a fresh stream replays it exactly.
  again = Stream(digits.train, 100, seed=3, name="train").batch(17)
  np.testing.assert_array_equal(again["image"], stream.batch(17)["image"])
  assert not np.array_equal(stream.batch(0)["label"], stream.batch(15)["label"])


def test_gather_pads_with_mask_and_extras(digits):
  b = gather(digits.train, np.array([3, 4]), 4, extras={"w": np.arange(len(digits.train))})
  np.testing.assert_array_equal(b["mask"], [1, 1, 0, 0])
  np.testing.assert_array_equal(b["w"][:2], [3, 4])


# ---------------------------------------------------------------- how data is kept

def test_pixels_read_as_numpy_divides_them_on_host_and_in_jit(digits):
  """uint8 storage: a quarter of the bytes, and p/255 bit-identical to the float path of before
  (``astype(np.float32) / 255``) on the host and inside a jitted program, where XLA would round
  a division by 255 differently for 126 of the 256 values."""
  every = np.arange(256, dtype=np.uint8)
  before = every.astype(np.float32) / 255.0
  for converted in (pixels_to_float(every), np.asarray(jax.jit(pixels_to_float)(every))):
    np.testing.assert_array_equal(converted.view(np.uint32), before.view(np.uint32))
  assert digits.train.is_pixels and digits.train.stored.dtype == np.uint8
  assert digits.train.stored.nbytes * 4 == digits.train.images.nbytes
  np.testing.assert_array_equal(digits.train.images,
                                digits.train.stored.astype(np.float32) / 255.0)
  floats = ArrayDataset(digits.train.images, digits.train.labels)
  for kept in (digits.train.subset(np.arange(5, 9)), ArrayDataset.concatenate(
      [digits.train.subset(np.arange(5, 7)), digits.train.subset(np.arange(7, 9))])):
    assert kept.is_pixels
    np.testing.assert_array_equal(kept.images, floats.subset(np.arange(5, 9)).images)
  batch = gather(digits.train, np.array([3, 4]), 4, stored=True)
  assert batch["image"].dtype == np.uint8
  np.testing.assert_array_equal(pixels_to_float(batch["image"]),
                                gather(floats, np.array([3, 4]), 4)["image"])
  with pytest.raises(ValueError, match=r"from_pixels: pixels are float32; expected uint8"):
    ArrayDataset.from_pixels(floats.images, floats.labels)


class CountingSource:
  """A data source that records which rows were read."""

  def __init__(self, source):
    self.source, self.read = source, []

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return self.source[i]

  def __getitems__(self, rows):
    self.read += list(rows)
    return self.source.__getitems__(rows)


def test_fashion_mnist_read_by_index_gives_the_in_memory_batches(fashion_idx_dir, tmp_path):
  """A budget below the dataset's size keeps it as records read by index: the same labels,
  statistics, images and stream batches as in memory, and only the rows asked for are read —
  a subset reads nothing, and placing a batch over 2 devices reads each of its rows once
  (each process reads only its own devices' rows)."""
  memory = load_dataset("fashion_mnist", data_dir=str(tmp_path), source_dir=fashion_idx_dir,
                        storage="memory")
  records = load_dataset("fashion_mnist", data_dir=str(tmp_path), source_dir=fashion_idx_dir,
                         memory_budget_gib=1e-4)  # 300 images of 784 bytes > 105 kB
  assert isinstance(memory.train.stored, np.ndarray)
  assert isinstance(records.train.stored, RecordImages)
  assert (records.mean, records.std, records.class_names) == (memory.mean, memory.std,
                                                              memory.class_names)
  np.testing.assert_array_equal(records.train.labels, memory.train.labels)
  np.testing.assert_array_equal(records.test.images, memory.test.images)
  for stored in (False, True):
    a, b = (Stream(d.train, 64, seed=1, name="train", stored=stored) for d in (memory, records))
    for step in (0, 3, 7):
      np.testing.assert_array_equal(np.asarray(a.batch(step)["image"]),
                                    np.asarray(b.batch(step)["image"]))
  counting = CountingSource(records.train.stored.source)
  view = ArrayDataset.from_pixels(RecordImages(counting), records.train.labels)
  forget = view.subset(np.flatnonzero(view.labels == 0))
  assert counting.read == [] and len(forget) == np.sum(memory.train.labels == 0)
  batch = gather(forget, np.arange(len(forget)), 2 * len(forget), stored=True)
  placed = sharding.shard_leading(batch, sharding.make_mesh(2))
  rows = forget.stored.index[np.r_[np.arange(len(forget)), np.zeros(len(forget), int)]]
  assert sorted(counting.read) == sorted(rows.tolist())
  np.testing.assert_array_equal(np.asarray(placed["image"]),
                                memory.train.subset(rows).stored)


@pytest.mark.parametrize("kwargs, message", [
    ({"storage": "disk"}, r"data.storage: 'disk'; allowed: auto, memory, records"),
    ({"memory_budget_gib": -1.0}, r"data.memory_budget_gib: -1.0; must be ≥ 0"),
])
def test_bad_storage_settings_name_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    load_dataset("digits", **kwargs)
