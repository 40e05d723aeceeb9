"""Objectives: one forward pass per data stream plus a weighted sum of terms.

An objective is what a training step differentiates::

    objective(params, model_state, batch, key, frozen) -> (loss, (model_state, aux))

``batch`` maps stream names (``"forget"``, ``"retain"``, ``"perturbed"``, …) to
``{"image", "label", "mask"}`` and may hold ``"progress"`` (t/T in [0, 1]). Images may come as
uint8 pixels (how datasets are kept): the objective converts them to floats in [0, 1] first
(:func:`~unlearn_jax.data.datasets.pixels_to_float`), so terms always read floats. A stream may also
carry a frozen teacher's outputs computed once beforehand (``"<teacher>/features"``,
``"<teacher>/logits"``; :func:`unlearn_jax.training.execute.teacher_outputs`): the objective then
reads them instead of running that teacher on the stream. ``frozen`` holds what is read but not
trained: ``"weights"`` {term name: λ}, ``"teachers"`` {name: (params,
model_state)}, ``"forget_mask"`` (bool [C]). Weights live in ``frozen`` so a sweep over λ needs no
recompilation. ``aux`` is flat with ``/``-namespaced names (``"kd/loss"``).

The model's batch-norm running statistics (``model_state``) flow through the objective, as in
jax_privacy's loss contract, because a training-mode forward pass updates them.

"Spotter + X" is the union of two term dicts: ``make_objective(model, {**spotter, **x})``.
:func:`make_frozen` builds ``frozen``; the objective checks, when it is traced, that ``batch``
and ``frozen`` hold every stream, weight, teacher and entry its terms read, and names what is
missing and what was given. A training-mode forward pass of stream s draws the model's RNG
collections (Dropout) from ``fold_in(key, T + i_s)`` (T terms, i_s the stream's index among all
the objective's streams), apart from the terms' keys ``fold_in(key, i_term)``.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.augment import random_crop_flip
from unlearn_jax.data.datasets import pixels_to_float
from unlearn_jax.models import Model


@dataclasses.dataclass(frozen=True)
class Outputs:
  """A forward pass: penultimate ``features`` [B, d] and ``logits`` [B, C]."""

  features: jax.Array
  logits: jax.Array


@dataclasses.dataclass(frozen=True)
class Context:
  """What a term reads: its stream's data and forward outputs, and the step's context."""

  data: Mapping[str, jax.Array] | None  # {"image", "label", "mask"} of the term's stream
  out: Outputs | None  # student forward on the stream
  teachers: Mapping[str, Outputs]  # teachers' forwards on the stream (stop-gradient, eval BN)
  params: Any
  key: jax.Array
  frozen: Mapping[str, Any]
  progress: jax.Array


@dataclasses.dataclass(frozen=True)
class Term:
  """A scalar loss piece ``fn(ctx)`` reading one ``stream``, the named frozen ``teachers`` and
  the entries ``needs`` of ``frozen`` (e.g. ``"forget_mask"``)."""

  fn: Callable[[Context], jax.Array]
  stream: str | None = None
  teachers: tuple[str, ...] = ()
  needs: tuple[str, ...] = ()


STREAM_FIELDS = ("image", "label", "mask")


def forget_mask(forget_classes: Sequence[int], num_classes: int) -> np.ndarray:
  """Bool [C] vector, True on the forget classes 𝒞_f.

  Raises:
    ValueError: a class id outside 0..C−1, or every class forgotten (p̃ would be undefined).

  >>> forget_mask((0, 2), 4)
  array([ True, False,  True, False])
  """
  classes = np.asarray(tuple(forget_classes), np.int64)
  if np.any((classes < 0) | (classes >= num_classes)):
    raise ValueError(f"forget_classes: {tuple(classes.tolist())} has ids outside "
                     f"0..{num_classes - 1}.")
  mask = np.zeros(num_classes, bool)
  mask[classes] = True
  if mask.all():
    raise ValueError(f"forget_classes: all {num_classes} classes are forgotten; the masked "
                     "softmax needs at least one kept class.")
  return mask


def check_weights(weights: Mapping[str, float], field: str = "weights") -> None:
  """Raises ValueError naming a weight λ that is not a finite number ≥ 0."""
  for name, w in weights.items():
    try:
      value = float(w)
    except (TypeError, ValueError):
      value = math.nan
    if not math.isfinite(value) or value < 0:
      raise ValueError(f"{field}.{name}: {w!r} is not allowed; weights must be finite and ≥ 0 "
                       "(use a negated term, e.g. neg_ce, to ascend a loss).")


def make_frozen(weights: Mapping[str, float], *,
                teachers: Mapping[str, tuple[Any, Any]] | None = None,
                forget_mask: np.ndarray | None = None) -> dict[str, Any]:
  """The ``frozen`` context of an objective: ``{"weights": {term: float32 λ}}`` plus
  ``"teachers"`` {name: (params, model_state)} and ``"forget_mask"`` (bool [C]) when given.

  Raises:
    ValueError: a weight that is not a finite number ≥ 0, or a forget mask that is not a 1-D
      bool array.

  >>> make_frozen({"ce": 1.0})
  {'weights': {'ce': Array(1., dtype=float32)}}
  """
  check_weights(weights)
  frozen: dict[str, Any] = {"weights": {k: jnp.float32(v) for k, v in weights.items()}}
  if teachers:
    frozen["teachers"] = dict(teachers)
  if forget_mask is not None:
    mask = np.asarray(forget_mask)
    if mask.dtype != bool or mask.ndim != 1:
      raise ValueError(f"forget_mask: {mask.dtype} array of shape {mask.shape}; expected bool [C] "
                       "(forget_mask(forget_classes, num_classes) builds it).")
    frozen["forget_mask"] = jnp.asarray(mask)
  return frozen


def _readers(terms: Mapping[str, Term], names, test) -> list[str]:
  return [n for n in names if test(terms[n])]


def _check_inputs(terms: Mapping[str, Term], names: list[str], forwards, teacher_reads, batch,
                  frozen) -> None:
  """Raises ValueError naming the first stream, field, weight, teacher or frozen entry that the
  terms ``names`` read and ``batch`` / ``frozen`` lack, with what was given."""
  if not isinstance(frozen, Mapping) or "weights" not in frozen:
    given = sorted(frozen) if isinstance(frozen, Mapping) else type(frozen).__name__
    raise ValueError(f"frozen: no 'weights' (λ of every term); given {given}. Build it with "
                     "make_frozen(weights, teachers=…, forget_mask=…).")
  if missing := [n for n in names if n not in frozen["weights"]]:
    raise ValueError(f"frozen['weights']: no weight for term(s) {missing}; given: "
                     f"{sorted(frozen['weights'])}.")
  if not isinstance(batch, Mapping):
    raise ValueError(f"batch: a {type(batch).__name__}; expected a dict of streams "
                     f"{{name: {{'image', 'label', 'mask'}}}}.")
  streams = sorted(k for k in batch if k != "progress")
  for s in forwards:
    readers = _readers(terms, names, lambda t, s=s: t.stream == s)
    if s not in batch:
      raise ValueError(f"batch: no stream {s!r} (read by term(s) {readers}); given: {streams}.")
    if lacking := [f for f in STREAM_FIELDS if f not in batch[s]]:
      raise ValueError(f"batch[{s!r}]: no {lacking} (read by term(s) {readers}); a stream holds "
                       f"{list(STREAM_FIELDS)}, given: {sorted(batch[s])}.")
  teachers = frozen.get("teachers", {})
  for t, s in teacher_reads:
    if f"{t}/logits" not in batch[s] and t not in teachers:
      readers = _readers(terms, names, lambda term, t=t, s=s: t in term.teachers
                         and term.stream == s)
      raise ValueError(f"frozen['teachers']: no teacher {t!r} (read by term(s) {readers} on "
                       f"stream {s!r}, whose batch carries no '{t}/logits' either); given: "
                       f"{sorted(teachers)}.")
  for n in names:
    if lacking := [k for k in terms[n].needs if k not in frozen]:
      raise ValueError(f"frozen: no {lacking} (read by term {n!r}); given: {sorted(frozen)}.")


Objective = Callable[..., tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]


def make_objective(model: Model, terms: Mapping[str, Term], *, bn_train: bool = True,
                   streams: Sequence[str | None] | None = None) -> Objective:
  """Builds ``objective(params, model_state, batch, key, frozen)`` = Σ_name λ_name · term_name.

  Args:
    model: the student's model.
    terms: {name: Term}; each name needs a weight in ``frozen["weights"]``, each term's stream a
      ``batch`` entry ``{"image", "label", "mask"}``, each teacher an entry of
      ``frozen["teachers"]`` (or its outputs in the stream), each of its ``needs`` an entry of
      ``frozen``.
    bn_train: batch norm uses batch statistics and updates running ones (False: frozen, as in
      Spotter).
    streams: compute only the terms reading these data sets (``None`` in it: also the terms
      reading none, such as ℓ1), each with the key and weight it has in the whole objective, so
      objectives over a partition of the data sets sum to the whole one.

  Raises:
    ValueError: no terms, or a value that is not a :class:`Term`; when the objective is called
      (traced): a stream, stream field, weight, teacher or ``frozen`` entry that its terms read
      and ``batch`` / ``frozen`` lack (naming it, the terms that read it and what was given).
  """
  if not terms:
    raise ValueError("terms: an objective needs at least one term.")
  if bad := [n for n, t in terms.items() if not isinstance(t, Term)]:
    raise ValueError(f"terms: {bad} are not Terms (build them with objectives.terms, e.g. "
                     "terms.cross_entropy('retain')).")
  all_names = sorted(terms)
  all_streams = sorted({t.stream for t in terms.values() if t.stream})
  names = [n for n in all_names if streams is None or terms[n].stream in streams]
  if not names:
    raise ValueError(f"streams: {list(streams)} select no term of {all_names}.")
  forwards = sorted({terms[n].stream for n in names if terms[n].stream})
  teacher_reads = sorted({(t, terms[n].stream) for n in names for t in terms[n].teachers})

  def objective(params, model_state, batch, key, frozen):
    _check_inputs(terms, names, forwards, teacher_reads, batch, frozen)
    batch = {**batch, **{s: {**batch[s], "image": pixels_to_float(batch[s]["image"])}
                         for s in forwards}}
    outs = {}
    for s in forwards:
      forward_key = jax.random.fold_in(key, len(all_names) + all_streams.index(s))
      features, logits, model_state = model.apply(
          params, model_state, batch[s]["image"], train=bn_train, key=forward_key)
      outs[s] = Outputs(features, logits)
    teacher_outs = {}
    for t, s in teacher_reads:
      if f"{t}/logits" in batch[s]:
        features, logits = batch[s][f"{t}/features"], batch[s][f"{t}/logits"]
      else:
        t_params, t_state = frozen["teachers"][t]
        features, logits, _ = model.apply(t_params, t_state, batch[s]["image"], train=False)
      teacher_outs[t, s] = jax.lax.stop_gradient(Outputs(features, logits))
    progress = jnp.asarray(batch.get("progress", 0.0), jnp.float32)
    total, aux = jnp.zeros((), jnp.float32), {}
    for name in names:
      term = terms[name]
      ctx = Context(
          data=batch[term.stream] if term.stream else None,
          out=outs.get(term.stream),
          teachers={t: teacher_outs[t, term.stream] for t in term.teachers},
          params=params, key=jax.random.fold_in(key, all_names.index(name)), frozen=frozen,
          progress=progress)
      value = term.fn(ctx)
      aux[f"{name}/loss"] = value
      total = total + frozen["weights"][name] * value
    return total, (model_state, aux)

  return objective


def with_augmentation(objective: Objective, stream: str) -> Objective:
  """The same objective with ``stream``'s images randomly cropped and flipped on device first."""

  def augmented(params, model_state, batch, key, frozen):
    if any(k.endswith("/logits") for k in batch[stream]):
      raise ValueError(f"stream '{stream}': augmented images cannot use teacher outputs "
                       "computed beforehand; leave them out of its stream.")
    aug_key, key = jax.random.split(key)
    data = {**batch[stream], "image": random_crop_flip(batch[stream]["image"], aug_key)}
    return objective(params, model_state, {**batch, stream: data}, key, frozen)

  return augmented


jax.tree_util.register_dataclass(Outputs, data_fields=["features", "logits"], meta_fields=[])
