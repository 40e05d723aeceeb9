"""Sequential deletion requests (docs/math.md §6.9): requests arrive one after another, each is
applied to the model the previous one left, and after each the metrics on the cumulative forget
set are compared with Retrain on it.

``config.sequence`` names the requests, exactly one of:

* ``classes``: one tuple of class ids per request, ``((0,), (3,), (7,))``;
* ``indices``: one tuple of training-set indices per request;
* ``batches`` random batches of ``batch_fraction`` of the training set each, disjoint, drawn
  from ``config.seed`` (uniformly, not stratified: deletion requests need not follow classes).

Request r unlearns D_f^(r) (its own examples) from θ_u^(r−1) (θ_u^(0) = θ_o) with D_r^(r) = the
training examples not forgotten in requests 1..r and the forgotten classes 𝒞_f^(r) = the classes
of requests 1..r (Spotter's mask). A distilling method's teacher (Spotter, SCRUB, Bad Teacher's
competent one) is θ_u^(r−1) with ``teacher="previous"`` (the default: a service that honours a
deletion keeps no model trained on the deleted data) or θ_o with ``teacher="original"``.

The runner runs request r as an ordinary experiment of its own config
(:func:`request_config`: ``forget`` = the cumulative set, ``sequence.request`` = r, output in
``<output_dir>/req<r>``), so its Retrain is trained on the cumulative set and cached by that key,
and every model is kept and resumed as in any run.
"""

import dataclasses
import itertools
import pathlib

import ml_collections
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.datasets import Dataset
from unlearn_jax.data.splits import Splits

TEACHERS = ("previous", "original")
FIELD = "config.sequence"


def given(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config`` names a sequence of requests (a config recorded before sequences
  existed has no ``sequence``)."""
  s = config.get("sequence")
  return s is not None and bool(s.classes or s.indices or s.batches or s.batch_fraction is not None)


def whole(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config`` is a whole sequence (not one request's config, :func:`request_config`)."""
  return given(config) and config.sequence.request == 0


def count(config: ml_collections.ConfigDict) -> int:
  """The number of requests (0 without a sequence)."""
  s = config.sequence
  return len(s.classes) or len(s.indices) or int(s.batches or 0)


NOUNS = {"classes": ("class id", "class ids"), "indices": ("index", "indices")}


def _requests(value, name: str) -> list[tuple[int, ...]]:
  """``value`` as a list of non-empty tuples of ints ≥ 0, each id once; ValueError naming it."""
  field, (one, what) = f"{FIELD}.{name}", NOUNS[name]
  if not isinstance(value, tuple | list) or not all(isinstance(r, tuple | list) for r in value):
    raise ValueError(f"{field}: {value!r}; give one tuple of {what} per request, e.g. "
                     f"{'((0,), (3,))' if name == 'classes' else '((0, 5), (9,))'}.")
  seen: dict[int, int] = {}
  out = []
  for r, request in enumerate(value, start=1):
    if not request:
      raise ValueError(f"{field}: request {r} is empty; every request forgets at least one "
                       f"of the {what}.")
    for item in request:
      if isinstance(item, bool) or not isinstance(item, int | np.integer) or item < 0:
        raise ValueError(f"{field}: request {r} names {item!r}; {what} are ints ≥ 0.")
      if item in seen:
        where = "twice" if seen[item] == r else f"already forgotten in request {seen[item]}"
        raise ValueError(f"{field}: request {r} names {one} {item} {where}; each may be "
                         "forgotten once (requests must not overlap).")
      seen[item] = r
    out.append(tuple(int(i) for i in request))
  return out


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for a malformed sequence (before any data is read):
  not exactly one kind of request, an empty request, a class or index named twice or already
  forgotten, a bad batch count or fraction, an unknown teacher, a request index out of range,
  or ``trial_classes`` (a sequence replaces ``forget``)."""
  s = config.get("sequence")
  if s is None:  # recorded before sequences existed
    return
  if s.teacher not in TEACHERS:
    raise ValueError(f"{FIELD}.teacher: {s.teacher!r}; allowed: {', '.join(TEACHERS)}.")
  kinds = [k for k, on in (("classes", bool(s.classes)), ("indices", bool(s.indices)),
                           ("batches", bool(s.batches or s.batch_fraction is not None))) if on]
  if len(kinds) > 1:
    raise ValueError(f"{FIELD}: {' and '.join(kinds)} are given together; give one kind of "
                     "request (unset the others: classes=(), indices=(), batches=0, "
                     "batch_fraction=None).")
  if s.classes:
    _requests(s.classes, "classes")
  if s.indices:
    _requests(s.indices, "indices")
  if "batches" in kinds:
    if isinstance(s.batches, bool) or not isinstance(s.batches, int) or s.batches < 1:
      raise ValueError(f"{FIELD}.batches: {s.batches!r}; with batch_fraction give the number of "
                       "random batches, an int ≥ 1.")
    f = s.batch_fraction
    if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 < s.batches * f < 1.0:
      raise ValueError(f"{FIELD}.batch_fraction: {f!r}; with batches={s.batches} give the "
                       f"fraction of the training set per batch, in (0, {1 / s.batches:.4g}) "
                       "so that the batches leave some training data.")
  if isinstance(s.request, bool) or not isinstance(s.request, int) or not (
      0 <= s.request <= count(config)):
    raise ValueError(f"{FIELD}.request: {s.request!r}; the runner sets it (0 in a config file; "
                     f"1..{count(config)} for a request of this sequence).")
  if kinds and config.trial_classes:
    raise ValueError("config.trial_classes: not used with a sequence, whose requests replace "
                     "forget; set config.trial_classes=() (trials then differ by seed).")


def request_indices(config: ml_collections.ConfigDict, dataset: Dataset) -> list[np.ndarray]:
  """The training indices of each request, sorted (batches drawn from ``config.seed``).

  Raises:
    ValueError: a class id or index out of the dataset's range, every class forgotten, a request
      that selects no example, or batches that do not fit (naming the field).
  """
  s, labels = config.sequence, dataset.train.labels
  n, classes = len(labels), dataset.num_classes
  if s.classes:
    requests = _requests(s.classes, "classes")
    bad = sorted(c for c in itertools.chain(*requests) if c >= classes)
    if bad:
      raise ValueError(f"{FIELD}.classes: class ids {bad} out of range; allowed 0..{classes - 1}.")
    if sum(map(len, requests)) == classes:
      raise ValueError(f"{FIELD}.classes: all {classes} classes would be forgotten; keep at "
                       "least one.")
    out = [np.flatnonzero(np.isin(labels, r)) for r in requests]
  elif s.indices:
    requests = _requests(s.indices, "indices")
    bad = sorted(i for i in itertools.chain(*requests) if i >= n)
    if bad:
      raise ValueError(f"{FIELD}.indices: {bad[:5]} out of range; allowed 0..{n - 1}.")
    out = [np.asarray(sorted(r), np.int64) for r in requests]
  else:
    size = int(round(s.batch_fraction * n))
    if size < 1:
      raise ValueError(f"{FIELD}.batch_fraction: {s.batch_fraction} of {n} training examples "
                       "is no example; give a larger fraction.")
    order = seeding.host_rng(config.seed, "sequence_batches").permutation(n)
    out = [np.sort(order[k * size:(k + 1) * size]) for k in range(s.batches)]
  for r, idx in enumerate(out, start=1):
    if len(idx) == 0:
      raise ValueError(f"{FIELD}: request {r} selects no training example.")
  return out


def request_config(config: ml_collections.ConfigDict, dataset: Dataset,
                   request: int | None = None) -> ml_collections.ConfigDict:
  """The locked config of request ``request`` (default: ``config``'s own, or the last one of a
  whole sequence): ``forget`` = the examples (or classes) of requests 1..r, ``sequence.request``
  = r, ``output_dir`` = the sequence's ``output_dir/req<r>``.

  Raises:
    ValueError: as :func:`request_indices`.
  """
  r = request or config.sequence.request or count(config)
  chosen = request_indices(config, dataset)[:r]
  out = ml_collections.ConfigDict(config.to_dict())
  base = pathlib.Path(config.output_dir)
  out.output_dir = str((base.parent if config.sequence.request else base) / f"req{r}")
  out.sequence.request = r
  classes = sorted(itertools.chain(*config.sequence.classes[:r]))
  indices = () if classes else tuple(int(i) for i in np.sort(np.concatenate(chosen)))
  out.forget = {"classes": tuple(classes), "fraction": None, "indices": indices,
                "stratified": True}
  out.lock()
  return out


def unlearning_splits(config: ml_collections.ConfigDict, dataset: Dataset,
                      splits: Splits) -> Splits:
  """What request r's unlearning sees: ``splits`` (of the cumulative forget set: D_r^(r), the
  classes 𝒞_f^(r), the test sets) with D_f = the request's own examples D_f^(r)."""
  idx = request_indices(config, dataset)[config.sequence.request - 1]
  return dataclasses.replace(splits, forget_idx=idx)


def key(config: ml_collections.ConfigDict) -> dict:
  """What a request's models and results depend on beyond its cumulative forget set: the
  requests up to it, in order, and the teacher; {} without a sequence (keys stay as they were)."""
  if not given(config):
    return {}
  s, r = config.sequence, config.sequence.request
  requests = (s.classes or s.indices)[:r] or {"batches": r, "batch_fraction": s.batch_fraction}
  return {"sequence": {"requests": requests, "teacher": s.teacher}}


def describe(config: ml_collections.ConfigDict, splits: Splits) -> dict:
  """Request r's record in its results: its index, its own classes (empty for examples) and
  its size |D_f^(r)| (``splits``: :func:`unlearning_splits`)."""
  r = config.sequence.request
  classes = list(config.sequence.classes[r - 1]) if config.sequence.classes else []
  return {"index": r, "of": count(config), "classes": classes, "size": len(splits.forget_idx)}


def combine(config: ml_collections.ConfigDict, per_request: list[dict]) -> dict:
  """A whole sequence's results: the last request's (its table and plots) with ``config`` and,
  under ``requests``, every request's results without per-model details; the wall time of all."""
  last = per_request[-1]
  requests = [{k: v for k, v in r.items() if k != "config"}
              | {"models": {n: {**m, "details": {}} for n, m in r["models"].items()}}
              for r in per_request]
  return {**last, "config": config.to_dict(), "requests": requests,
          "wall_seconds": sum(r["wall_seconds"] for r in per_request)}


__all__ = ["TEACHERS", "combine", "count", "describe", "given", "key",
           "request_config", "request_indices", "unlearning_splits", "validate", "whole"]
