"""Forget-set specifications and the splits D_f, D_r, D_t^f, D_t^r and a calibration set.

Class unlearning forgets whole classes 𝒞_f: D_f = training examples of 𝒞_f, D_r = the rest,
D_t^f / D_t^r = test examples of forgotten / kept classes. Random (or explicit) forgetting takes
D_f from all classes, so D_t^f is empty and D_t^r is the whole test set. The calibration set
(attacks' held-out kept-class data, docs/math.md §3.2) is a stratified fraction of D_t^r;
``test_heldout`` is the rest of D_t^r. Forget sets by memorization (RUM's low / medium / high
strata) are chosen from recorded per-example scores by :func:`memorization_strata`.

Your own arrays become a :class:`Splits` through :func:`splits_from_arrays` (D_f, and D_r and a
test set when you have them); every set argument of the library's functions that takes an
:class:`ArrayDataset` also takes a pair ``(images, labels)`` (:func:`as_dataset`).
"""

import dataclasses

import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset, Dataset, channel_stats


@dataclasses.dataclass(frozen=True)
class ForgetSpec:
  """What to forget: exactly one of whole ``classes``, a random ``fraction``, or ``indices``.

  ``stratified`` (fraction only) draws the same fraction from every class.
  """

  classes: tuple[int, ...] = ()
  fraction: float | None = None
  indices: tuple[int, ...] = ()
  stratified: bool = True

  @property
  def kind(self) -> str:
    return "classes" if self.classes else "fraction" if self.fraction is not None else "indices"

  def validate(self, num_classes: int, num_train: int) -> None:
    """Raises ValueError naming the field and what is allowed."""
    given = {"classes": bool(self.classes), "fraction": self.fraction is not None,
             "indices": bool(self.indices)}
    if sum(given.values()) != 1:
      named = [k for k, on in given.items() if on]
      problem = (f"{' and '.join(f'forget.{k}' for k in named)} are given together; keep "
                 "one and unset the others (forget.classes=(), forget.fraction=None, "
                 "forget.indices=())" if named
                 else "none is given (an empty forget set is not allowed)")
      raise ValueError(
          "forget: give exactly one of forget.classes, forget.fraction or forget.indices; "
          f"{problem} (got classes={self.classes}, fraction={self.fraction}, indices of length "
          f"{len(self.indices)}).")
    if self.classes:
      bad = [c for c in self.classes if not 0 <= c < num_classes]
      if bad:
        raise ValueError(
            f"forget.classes: class ids {bad} out of range; allowed 0..{num_classes - 1}.")
      if len(set(self.classes)) != len(self.classes):
        raise ValueError(f"forget.classes: repeated class ids in {self.classes}.")
      if len(set(self.classes)) == num_classes:
        raise ValueError(
            f"forget.classes: all {num_classes} classes would be forgotten; keep at least one.")
    if self.fraction is not None and not 0.0 < self.fraction < 1.0:
      raise ValueError(f"forget.fraction: {self.fraction} is outside (0, 1).")
    if self.indices:
      idx = np.asarray(self.indices)
      if idx.min() < 0 or idx.max() >= num_train:
        raise ValueError(f"forget.indices: must lie in 0..{num_train - 1}.")
      if len(np.unique(idx)) != len(idx):
        raise ValueError("forget.indices: repeated indices.")


def _subset(split: str, field: str, doc: str) -> property:
  """A property: ``dataset.<split>`` at the indices in ``<field>``."""
  return property(lambda self: getattr(self.dataset, split).subset(getattr(self, field)), doc=doc)


@dataclasses.dataclass(frozen=True)
class Splits:
  """Index arrays into ``dataset.train`` / ``dataset.test`` and the forgotten classes."""

  dataset: Dataset
  forget_classes: tuple[int, ...]
  forget_idx: np.ndarray
  retain_idx: np.ndarray
  test_forget_idx: np.ndarray
  test_retain_idx: np.ndarray
  calibration_idx: np.ndarray

  forget = _subset("train", "forget_idx", "D_f: the forgotten training examples.")
  retain = _subset("train", "retain_idx", "D_r: the kept training examples.")
  test_forget = _subset("test", "test_forget_idx", "D_t^f: test examples of forgotten classes.")
  test_retain = _subset("test", "test_retain_idx", "D_t^r: test examples of kept classes.")
  calibration = _subset("test", "calibration_idx",
                        "The attacks' calibration set: part of D_t^r, never forget-class images.")

  @property
  def test_heldout(self) -> ArrayDataset:
    """D_t^r without the calibration set (for attacks' retain accuracy)."""
    return self.dataset.test.subset(np.setdiff1d(self.test_retain_idx, self.calibration_idx))

  @property
  def kept_classes(self) -> tuple[int, ...]:
    return tuple(c for c in range(self.dataset.num_classes) if c not in self.forget_classes)


def _stratified_sample(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    k = int(round(fraction * len(members)))
    chosen.append(rng.choice(members, size=k, replace=False))
  return np.sort(np.concatenate(chosen))


def make_splits(
    dataset: Dataset, spec: ForgetSpec, *, seed: int, calibration_fraction: float = 0.5
) -> Splits:
  """Splits ``dataset`` for unlearning ``spec``; a function of ``seed`` alone.

  Raises:
    ValueError: an invalid ``spec`` (see :meth:`ForgetSpec.validate`) or calibration_fraction.
  """
  train_labels = dataset.train.labels
  spec.validate(dataset.num_classes, len(train_labels))
  _check_calibration(calibration_fraction)
  n = len(train_labels)
  forget_classes: tuple[int, ...] = ()
  if spec.kind == "classes":
    forget_classes = tuple(sorted(spec.classes))
    forget_idx = np.flatnonzero(np.isin(train_labels, forget_classes))
  elif spec.kind == "fraction":
    rng = seeding.host_rng(seed, "forget_fraction")
    if spec.stratified:
      forget_idx = _stratified_sample(train_labels, spec.fraction, rng)
    else:
      forget_idx = np.sort(rng.choice(n, size=int(round(spec.fraction * n)), replace=False))
  else:
    forget_idx = np.sort(np.asarray(spec.indices))
  if len(forget_idx) == 0:
    raise ValueError(f"forget: the spec {spec} selects no training example (empty forget set).")
  return _splits(dataset, forget_classes, forget_idx, seed=seed,
                 calibration_fraction=calibration_fraction)


def _check_calibration(calibration_fraction: float) -> None:
  if not 0.0 <= calibration_fraction < 1.0:
    raise ValueError(f"calibration_fraction: {calibration_fraction} is outside [0, 1).")


def _splits(dataset: Dataset, forget_classes: tuple[int, ...], forget_idx: np.ndarray, *,
            seed: int, calibration_fraction: float) -> Splits:
  """The splits of ``dataset`` with D_f = train[forget_idx]: D_r the other training examples,
  the test set by class, the calibration set a stratified fraction of D_t^r from ``seed``."""
  test_labels = dataset.test.labels
  retain_idx = np.setdiff1d(np.arange(len(dataset.train)), forget_idx)
  test_is_forget = np.isin(test_labels, forget_classes)
  test_retain_idx = np.flatnonzero(~test_is_forget)
  calibration_idx = (
      _stratified_sample(test_labels[test_retain_idx], calibration_fraction,
                         seeding.host_rng(seed, "calibration"))
      if calibration_fraction > 0 and len(test_retain_idx) else np.zeros(0, np.int64))
  return Splits(
      dataset=dataset,
      forget_classes=forget_classes,
      forget_idx=forget_idx,
      retain_idx=retain_idx,
      test_forget_idx=np.flatnonzero(test_is_forget),
      test_retain_idx=test_retain_idx,
      calibration_idx=np.sort(test_retain_idx[calibration_idx]),
  )


MEMORIZATION_STRATA = ("low", "medium", "high")


def memorization_strata(scores: np.ndarray, size: int, strata=MEMORIZATION_STRATA, *,
                        seed: int) -> dict[str, np.ndarray]:
  """Forget sets of ``size`` examples each by memorization score (RUM, Zhao et al. NeurIPS 2024,
  kairanzhao/RUM ``main_forget.py``; docs/math.md §7.8), a function of ``scores`` and ``seed``.

  Among the examples with a finite score: "high" = the ``size`` highest, "low" = the ``size``
  lowest, "medium" = the ``size`` closest to 0.5. They are taken in that order (high, low, medium,
  whatever order ``strata`` lists) from the examples not yet taken, so the strata are disjoint;
  ties are broken by a permutation from ``host_rng(seed, "memorization_strata")``.

  Args:
    scores: [N] memorization per example (NaN: not estimated).
    size: examples per stratum.
    strata: names from :data:`MEMORIZATION_STRATA`.

  Returns:
    stratum → sorted indices into ``scores``, in the order of ``strata``.

  Raises:
    ValueError: an unknown or repeated stratum, size < 1, or fewer than size × len(strata)
      examples with a score.
  """
  strata = tuple(strata)
  bad = [s for s in strata if s not in MEMORIZATION_STRATA]
  if bad or not strata or len(set(strata)) != len(strata):
    raise ValueError(f"strata: {strata}; give distinct names from "
                     f"{', '.join(MEMORIZATION_STRATA)}.")
  if size < 1:
    raise ValueError(f"size: {size}; a stratum needs at least one example.")
  scores = np.asarray(scores, np.float64)
  eligible = np.flatnonzero(np.isfinite(scores))
  if len(eligible) < size * len(strata):
    raise ValueError(f"memorization: {len(eligible)} examples have a score (enough models with "
                     f"and without them), fewer than {len(strata)} strata × {size} examples; "
                     "use a smaller stratum size or a larger memorization population.")
  order = seeding.host_rng(seed, "memorization_strata").permutation(eligible)
  s = scores[order]
  keys = {"high": -s, "low": s, "medium": np.abs(s - 0.5)}
  taken = np.zeros(len(scores), bool)
  chosen = {}
  for name in ("high", "low", "medium"):
    if name in strata:
      ranked = order[np.argsort(keys[name], kind="stable")]
      pick = ranked[~taken[ranked]][:size]
      taken[pick] = True
      chosen[name] = np.sort(pick)
  return {name: chosen[name] for name in strata}


def as_dataset(data, field: str = "data") -> ArrayDataset:
  """``data`` as an :class:`ArrayDataset`: one itself, or a pair ``(images, labels)`` of arrays
  (NumPy or JAX; images floats in [0, 1], [N, H, W, C]; int labels [N]).

  Raises:
    ValueError: anything else (naming ``field``), or arrays that :class:`ArrayDataset` refuses.

  >>> len(as_dataset((np.zeros((3, 2, 2, 1), np.float32), np.zeros(3, np.int32))))
  3
  """
  if isinstance(data, ArrayDataset):
    return data
  if isinstance(data, tuple | list) and len(data) == 2:
    return ArrayDataset(np.asarray(data[0]), np.asarray(data[1]))
  raise ValueError(f"{field}: a {type(data).__name__}; expected an ArrayDataset or a pair "
                   "(images [N, H, W, C] in [0, 1], int labels [N]).")


def splits_from_arrays(forget, retain=None, test=None, *, num_classes: int,
                       forget_classes=(), seed: int = 0,
                       calibration_fraction: float = 0.5) -> Splits:
  """:class:`Splits` of your own arrays, for :func:`~unlearn_jax.unlearning.unlearn` and the
  metrics and attacks that read several sets.

  D_f = ``forget``, D_r = ``retain``; ``test`` is split by class into D_t^f (the
  ``forget_classes``) and D_t^r, whose stratified ``calibration_fraction`` (from ``seed``) is the
  attacks' calibration set, as :func:`make_splits` does. A set not given is empty (a metric that
  reads it gets no example). Each set is an :class:`ArrayDataset` or ``(images, labels)``.

  Args:
    forget, retain, test: the sets; images [N, H, W, C] floats in [0, 1], labels ints.
    num_classes: C (your model's).
    forget_classes: the forgotten classes for class unlearning; () for other forget sets.
    seed: the calibration set's draw.

  Raises:
    ValueError: a set that is not a dataset or pair, an empty ``forget``, images of different
      shapes, pixels outside [0, 1], labels outside 0..C−1, or ``forget_classes`` out of range,
      repeated, or not matching the forget set (a D_f label outside them, or one of them
      missing from D_f).
  """
  sets = {"forget": as_dataset(forget, "forget")}
  for name, value in (("retain", retain), ("test", test)):
    if value is not None:
      sets[name] = as_dataset(value, name)
  if len(sets["forget"]) == 0:
    raise ValueError("forget: no example (an empty forget set is not allowed).")
  shape = sets["forget"].image_shape
  for name, data in sets.items():
    if data.image_shape != shape:
      raise ValueError(f"{name}: images of shape {data.image_shape}, but forget's are "
                       f"{shape}.")
    if len(data) and not 0 <= data.labels.min() <= data.labels.max() < num_classes:
      raise ValueError(f"{name}: labels span {data.labels.min()}..{data.labels.max()}; allowed "
                       f"0..{num_classes - 1} (num_classes={num_classes}).")
  forget_classes = tuple(sorted(int(c) for c in forget_classes))
  if forget_classes:
    ForgetSpec(classes=forget_classes).validate(num_classes, len(sets["forget"]))
    present = set(np.unique(sets["forget"].labels).tolist())
    if present != set(forget_classes):
      raise ValueError(f"forget_classes: {forget_classes}, but the forget set holds classes "
                       f"{sorted(present)}; class unlearning forgets exactly those classes.")
  _check_calibration(calibration_fraction)
  empty = ArrayDataset(np.zeros((0, *shape), np.float32), np.zeros(0, np.int32))
  retain, test = sets.get("retain", empty), sets.get("test", empty)
  train = ArrayDataset(np.concatenate([sets["forget"].images, retain.images]),
                       np.concatenate([sets["forget"].labels, retain.labels]).astype(np.int32))
  mean, std = channel_stats(train.images)
  dataset = Dataset("arrays", train, ArrayDataset(test.images, test.labels.astype(np.int32)),
                    tuple(str(c) for c in range(num_classes)), mean, std)
  return _splits(dataset, forget_classes, np.arange(len(sets["forget"])), seed=seed,
                 calibration_fraction=calibration_fraction)
