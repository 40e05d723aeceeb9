"""What an unlearning method is: the data it reads, its hyper-parameters, and a plan builder.

A :class:`Method`'s ``build(config, original, data, seed)`` returns a :class:`Plan`: the starting
parameters, an Optax transformation, and blocks of steps, each running one phase's objective on
batches from the method's streams. The executor (:mod:`unlearn_jax.training.unlearn`) runs any
plan the same way, so a method is defined by data, not by a training loop of its own.

Data access is declared (``reads`` ⊆ {"forget", "retain"}) and enforced: the executor builds the
method's :class:`UnlearningData` with every undeclared set left out (``None``).
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unlearn_jax.data.batching import Stream, iterate
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.profiles import DERIVED
from unlearn_jax.models import Model, eval_forward
from unlearn_jax.objectives import (
  Objective,
  Term,
  make_objective,
  stream_parts,
  validate_weights,
)
from unlearn_jax.optim import make_optimizer, piecewise_schedule
from unlearn_jax.training import sharding

DATA_SETS = ("forget", "retain")


@dataclasses.dataclass(frozen=True)
class UnlearningData:
  """What a method may see; sets it did not declare are ``None``. Class ids are metadata."""

  forget: ArrayDataset | None
  retain: ArrayDataset | None
  forget_classes: tuple[int, ...]
  num_classes: int

  def require(self, name: str, method: str) -> ArrayDataset:
    data = getattr(self, name)
    if data is None:
      raise ValueError(f"method '{method}' needs {name} data, but none was given (it must "
                       f"declare '{name}' in its reads and the {name} set must be non-empty).")
    return data

  @property
  def forget_mask(self) -> np.ndarray:
    """bool [C], True on the forgotten classes."""
    return np.isin(np.arange(self.num_classes), self.forget_classes)


@dataclasses.dataclass(frozen=True)
class Original:
  """The trained model that unlearning starts from (θ_o), never modified."""

  model: Model
  params: Any
  model_state: Any


@dataclasses.dataclass(frozen=True)
class Phase:
  """A named objective; every block of a phase reuses one compiled step. ``parts``, when given,
  are objectives summing to ``objective`` that each read one stream (:func:`phase`); executors
  may step their gradients one after another (``split_streams``)."""

  name: str
  objective: Objective
  parts: tuple[Objective, ...] = ()


@dataclasses.dataclass(frozen=True)
class Block:
  """``num_steps`` steps of ``phase`` on ``batch_fn(i)`` (a dict of stream batches); skipped
  when ``skip(params, model_state)`` is True at its start."""

  phase: Phase
  num_steps: int
  batch_fn: Callable[[int], dict]
  skip: Callable[[Any, Any], bool] | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
  """A method's run: start point, optimiser, blocks of steps, frozen context; optionally
  ``finalize(params, model_state) -> (params, model_state)`` (back to the original model's shape)
  and ``stop(params, model_state) -> bool``, checked every ``stop_every`` steps, to end early."""

  model: Model
  params: Any
  model_state: Any
  tx: optax.GradientTransformation
  blocks: tuple[Block, ...]
  frozen: Mapping[str, Any]
  finalize: Callable[[Any, Any], tuple[Any, Any]] | None = None
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  stop: Callable[[Any, Any], bool] | None = None
  stop_every: int = 1


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered unlearning method."""

  name: str
  reads: frozenset[str]
  build: Callable[[ml_collections.ConfigDict, Original, UnlearningData, int], Plan]
  defaults: Mapping[str, Mapping[str, Any]]  # profile -> hyper-parameters
  description: str

  def config(self, profile: str = "small", **overrides) -> ml_collections.ConfigDict:
    """The method's hyper-parameters for ``profile`` with ``overrides``; unknown keys raise."""
    if profile not in self.defaults:
      raise ValueError(f"profile: {profile!r} unknown for method '{self.name}'; "
                       f"allowed: {', '.join(self.defaults)}.")
    config = ml_collections.ConfigDict(dict(self.defaults[profile]))
    config.lock()
    for key, value in overrides.items():
      if key not in config:
        raise ValueError(f"methods.{self.name}.{key}: unknown hyper-parameter; known: "
                         f"{', '.join(sorted(config.keys()))}.")
      config[key] = value
    return config


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
  """Adds ``method`` to the registry, with the profiles derived from its own (``profiles``)."""
  bad = method.reads - set(DATA_SETS)
  if bad:
    raise ValueError(f"method '{method.name}': reads {sorted(bad)}; allowed {DATA_SETS}.")
  defaults = dict(method.defaults)
  for profile, (base, overrides) in DERIVED.items():
    defaults.setdefault(profile, {**defaults[base], **overrides.get(method.name, {})})
  METHODS[method.name] = dataclasses.replace(method, defaults=defaults)
  return METHODS[method.name]


def get_method(name: str, field: str = "method") -> Method:
  """The registered method called ``name``.

  Raises:
    ValueError: unknown name (names ``field`` and lists the known ones).
  """
  if name not in METHODS:
    raise ValueError(f"{field}: unknown method {name!r}; known: {', '.join(sorted(METHODS))}.")
  return METHODS[name]


# Plan-building helpers shared by the methods.

def optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int | Sequence[int] = 1, *,
              mask=None) -> optax.GradientTransformation:
  """The config's optimiser; ``config.decay`` (if present) maps epoch → lr factor.

  ``steps_per_epoch`` is a constant, or the first step of every epoch when epochs differ.
  """
  decay = dict(config.get("decay", ()) or ())

  def start(e: int) -> int:
    if isinstance(steps_per_epoch, int):
      return e * steps_per_epoch
    return steps_per_epoch[e] if e < len(steps_per_epoch) else steps_per_epoch[-1]

  schedule = piecewise_schedule(config.learning_rate,
                                {start(int(e)): f for e, f in decay.items()})
  return make_optimizer(config.optimizer, learning_rate=schedule, momentum=config.momentum,
                        weight_decay=config.weight_decay, mask=mask)


def phase(name: str, model: Model, terms: Mapping[str, Term], *, bn_train: bool = True) -> Phase:
  parts = stream_parts(terms)
  return Phase(name, make_objective(model, terms, bn_train=bn_train),
               tuple(make_objective(model, terms, bn_train=bn_train, only=p) for p in parts)
               if len(parts) > 1 else ())


def epoch_blocks(ph: Phase, streams: Mapping[str, Stream], driver: str,
                 epochs: range | list[int], *, skip: Callable[[Any, Any], bool] | None = None,
                 chunk: int | None = None) -> list[Block]:
  """One block per epoch (or per ``chunk`` steps of it): ``driver``'s batches in a fresh order;
  other streams are zipped alongside and cycle (a shorter one restarts in a new order)."""
  spe = streams[driver].steps_per_epoch
  size = chunk or spe

  def block(first: int, n: int) -> Block:
    return Block(ph, n, lambda i: {k: s.batch(first + i) for k, s in streams.items()}, skip)

  return [block(e * spe + j, min(size, spe - j)) for e in epochs for j in range(0, spe, size)]


def frozen_context(original: Original, data: UnlearningData, weights: Mapping[str, float],
                   terms: Mapping[str, Term], **extra) -> dict:
  """Validated weights, the original model as ``teachers["original"]``, the forget mask."""
  validate_weights(weights, terms)
  return {"weights": {k: jnp.float32(v) for k, v in weights.items()},
          "teachers": {"original": (original.params, original.model_state), **extra},
          "forget_mask": jnp.asarray(data.forget_mask)}


def teacher_outputs(model: Model, data: ArrayDataset, *, batch_size: int = 512,
                    **teachers: tuple[Any, Any]) -> dict[str, np.ndarray]:
  """Each frozen teacher's eval-mode outputs on every example of ``data``, as :class:`Stream`
  extras ``{"<name>/features": [N, d], "<name>/logits": [N, C]}``.

  An eval-mode forward pass is a function of the example alone, so a stream carrying these
  spares the step one teacher forward pass per batch (:func:`make_objective` reads them), for
  one pass over ``data`` here. Not for augmented streams (the images change every step).

  Args:
    teachers: name=(params, model_state) for each teacher the terms read (``original=…``).
  """
  out = {}
  for name, teacher in teachers.items():
    out[f"{name}/features"], out[f"{name}/logits"] = sharding.map_batches(
        eval_forward(model), data, batch_size=batch_size, replicated_args=teacher)
  return out


def forget_accuracy_at_most(model: Model, forget: ArrayDataset, threshold: float | None,
                            *, max_examples: int = 1024,
                            batch_size: int = 512) -> Callable[[Any, Any], bool] | None:
  """A stop rule: True once the model's accuracy (%) on ``forget`` is ≤ ``threshold``.

  For methods that read D_f anyway (GA, NegGrad+): the common "ascend until forgotten" early
  stop. Checked every step on the first ``max_examples`` of D_f (so it stays cheap on large
  forget sets).
  """
  if threshold is None:
    return None
  forget = forget.subset(np.arange(min(max_examples, len(forget))))
  forward = eval_forward(model)

  def stop(params, model_state) -> bool:
    correct = sum(int(np.sum((np.argmax(forward(params, model_state, b["image"])[1], -1)
                              == b["label"]) * b["mask"])) for b in iterate(forget, batch_size))
    return 100.0 * correct / len(forget) <= threshold

  return stop
