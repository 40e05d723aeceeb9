"""Objectives: one forward pass per data stream plus a weighted sum of terms.

An objective is what a training step differentiates::

    objective(params, model_state, batch, key, frozen) -> (loss, (model_state, aux))

``batch`` maps stream names (``"forget"``, ``"retain"``, ``"perturbed"``, …) to
``{"image", "label", "mask"}`` and may hold ``"progress"`` (t/T in [0, 1]). A stream may also
carry a frozen teacher's outputs computed once beforehand (``"<teacher>/features"``,
``"<teacher>/logits"``; :func:`unlearn_jax.training.execute.teacher_outputs`): the objective then
reads them instead of running that teacher on the stream. ``frozen`` holds what is read but not
trained: ``"weights"`` {term name: λ}, ``"teachers"`` {name: (params,
model_state)}, ``"forget_mask"`` (bool [C]). Weights live in ``frozen`` so a sweep over λ needs no
recompilation. ``aux`` is flat with ``/``-namespaced names (``"kd/loss"``).

The model's batch-norm running statistics (``model_state``) flow through the objective, as in
jax_privacy's loss contract, because a training-mode forward pass updates them.

"Spotter + X" is the union of two term dicts: ``make_objective(model, {**spotter, **x})``.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from unlearn_jax.data.augment import random_crop_flip
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
  """A scalar loss piece ``fn(ctx)`` reading one ``stream`` and the named frozen ``teachers``."""

  fn: Callable[[Context], jax.Array]
  stream: str | None = None
  teachers: tuple[str, ...] = ()


Objective = Callable[..., tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]


def make_objective(model: Model, terms: Mapping[str, Term], *, bn_train: bool = True,
                   streams: Sequence[str | None] | None = None) -> Objective:
  """Builds ``objective(params, model_state, batch, key, frozen)`` = Σ_name λ_name · term_name.

  Args:
    model: the student's model.
    terms: {name: Term}; each name needs a weight in ``frozen["weights"]``.
    bn_train: batch norm uses batch statistics and updates running ones (False: frozen, as in
      Spotter).
    streams: compute only the terms reading these data sets (``None`` in it: also the terms
      reading none, such as ℓ1), each with the key and weight it has in the whole objective, so
      objectives over a partition of the data sets sum to the whole one.
  """
  if not terms:
    raise ValueError("terms: an objective needs at least one term.")
  all_names = sorted(terms)
  names = [n for n in all_names if streams is None or terms[n].stream in streams]
  if not names:
    raise ValueError(f"streams: {list(streams)} select no term of {all_names}.")
  forwards = sorted({terms[n].stream for n in names if terms[n].stream})
  teacher_reads = sorted({(t, terms[n].stream) for n in names for t in terms[n].teachers})

  def objective(params, model_state, batch, key, frozen):
    outs = {}
    for s in forwards:
      features, logits, model_state = model.apply(
          params, model_state, batch[s]["image"], train=bn_train)
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
