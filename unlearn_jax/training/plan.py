"""What a method declares: a start point, an optimiser, named data and a schedule of blocks.

A :class:`Plan` is data, not a loop: the executor (:mod:`unlearn_jax.training.execute`) batches
each :class:`Data` set by step number, computes frozen teachers' outputs once where it can, puts in
``frozen`` only what the terms read, and runs one compiled step per block name. Names must agree
(a term's stream is a key of ``data``, a teacher it reads a key of ``teachers``, every term has a
weight); :class:`Plan` checks that when it is built and names both sides.

A block of ``epochs`` passes over its ``driver`` data set sees, at its i-th step, batch
``position + i`` of every data set its terms read, where ``position`` counts the steps run so far
with that driver (so a data set's epochs continue across blocks, and a shorter set zipped
alongside restarts in a new order).
"""

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optax

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import Model
from unlearn_jax.objectives import Term, check_weights


@dataclasses.dataclass(frozen=True)
class Data:
  """A named data set of a plan: ``examples`` in batches of ``batch_size`` (a fresh order each
  epoch, the last batch padded with mask 0), with per-example ``extras`` batched alongside.
  ``augment``: random crop and flip on device each step (teachers then run in the step)."""

  examples: ArrayDataset
  batch_size: int
  extras: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  augment: bool = False

  @property
  def steps_per_epoch(self) -> int:
    """⌈N / batch_size⌉."""
    return math.ceil(len(self.examples) / self.batch_size)


@dataclasses.dataclass(frozen=True)
class Block:
  """``epochs`` passes over ``driver``'s data (or exactly ``steps`` steps) minimising
  Σ_name λ_name · term_name over ``terms``.

  Attributes:
    name: blocks of one name share one compiled step (so they must have the same terms).
    driver: whose epochs count; default: the one data set the terms read.
    bn_train: batch norm in training mode (False: running statistics frozen, as in Spotter).
    skip: ``skip(params, model_state) -> bool``, checked at the block's start and then every
      ``skip_every`` steps: True skips the rest of the block (its steps counted, no update).
  """

  name: str
  terms: Mapping[str, Term]
  epochs: int = 1
  steps: int | None = None
  driver: str | None = None
  bn_train: bool = True
  skip: Callable[[Any, Any], bool] | None = None
  skip_every: int | None = None

  @property
  def streams(self) -> tuple[str, ...]:
    """The data sets the terms read, sorted."""
    return tuple(sorted({t.stream for t in self.terms.values() if t.stream}))

  @property
  def teachers(self) -> set[tuple[str, str]]:
    """(teacher, data set) pairs the terms read."""
    return {(t, term.stream) for term in self.terms.values() for t in term.teachers}


@dataclasses.dataclass(frozen=True)
class Plan:
  """A method's run, as data.

  Attributes:
    model, params, model_state: the start point (usually θ_o's).
    tx: the Optax transformation of every step.
    data: named data sets the terms read (``"forget"``, ``"retain"``, ``"perturbed"``, …).
    blocks: the schedule; empty for a method that trains nothing (SSD).
    weights: λ of every term name in the blocks (an array argument: a sweep needs no recompile).
    seed: the data order is a function of (seed, data set name, epoch).
    teachers: frozen models the terms read, name → (params, model_state).
    forget_mask: bool [C], True on forgotten classes (read by masked distillation).
    finalize: ``(params, model_state) -> (params, model_state)`` after the last step.
    stop: ``(params, model_state) -> bool`` checked every ``stop_every`` steps; True ends the run.
    info: numbers recorded with the results.
  """

  model: Model
  params: Any
  model_state: Any
  tx: optax.GradientTransformation
  data: Mapping[str, Data]
  blocks: Sequence[Block]
  weights: Mapping[str, float]
  seed: int
  teachers: Mapping[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
  forget_mask: np.ndarray | None = None
  finalize: Callable[[Any, Any], tuple[Any, Any]] | None = None
  stop: Callable[[Any, Any], bool] | None = None
  stop_every: int = 1
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "blocks", tuple(self.blocks))
    check_plan(self)

  @property
  def num_steps(self) -> int:
    """Steps of the whole schedule."""
    return sum(block_steps(self, b) for b in self.blocks)


def driver(plan: Plan, block: Block) -> str:
  """The data set whose epochs ``block`` counts."""
  if block.driver is not None:
    return block.driver
  if len(block.streams) != 1:
    raise ValueError(f"block '{block.name}': its terms read {list(block.streams)}; name the "
                     "driver (whose epochs count).")
  return block.streams[0]


def block_steps(plan: Plan, block: Block) -> int:
  """``steps``, else ``epochs`` × the driver's steps per epoch."""
  if block.steps is not None:
    return block.steps
  return block.epochs * plan.data[driver(plan, block)].steps_per_epoch


def _number(value, field: str, *, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
    raise ValueError(f"{field}: {value!r}; must be an integer ≥ {minimum}.")


def _check_block(plan: Plan, block: Block) -> None:
  where = f"block '{block.name}'"
  if not block.terms:
    raise ValueError(f"{where}: no terms.")
  for term_name, term in block.terms.items():
    if term.stream is not None and term.stream not in plan.data:
      raise ValueError(f"{where}: term '{term_name}' reads data '{term.stream}', which the plan "
                       f"does not provide (its data: {sorted(plan.data)}).")
    for t in term.teachers:
      if t not in plan.teachers:
        raise ValueError(f"{where}: term '{term_name}' reads teacher '{t}', which the plan "
                         f"does not pass (its teachers: {sorted(plan.teachers)}).")
    if term_name not in plan.weights:
      raise ValueError(f"{where}: term '{term_name}' has no weight (weights: "
                       f"{sorted(plan.weights)}).")
  if block.driver is not None and block.driver not in plan.data:
    raise ValueError(f"{where}: driver '{block.driver}' is not a data set of the plan "
                     f"({sorted(plan.data)}).")
  if block.steps is None:
    _number(block.epochs, f"{where}.epochs", minimum=0)
  else:
    _number(block.steps, f"{where}.steps", minimum=0)
  if block.skip_every is not None:
    _number(block.skip_every, f"{where}.skip_every", minimum=1)
  driver(plan, block)


def check_plan(plan: Plan) -> None:
  """Raises ValueError naming both sides of every name that does not match (a term's data set or
  teacher that the plan does not provide, a term without a weight or a weight without a term,
  one block name with two sets of terms) and every count out of range."""
  for name, data in plan.data.items():
    _number(data.batch_size, f"data['{name}'].batch_size", minimum=1)
    if len(data.examples) == 0:
      raise ValueError(f"data['{name}']: no examples.")
    for key, extra in data.extras.items():
      if len(extra) != len(data.examples):
        raise ValueError(f"data['{name}'].extras['{key}']: {len(extra)} rows for "
                         f"{len(data.examples)} examples.")
  seen: dict[str, Block] = {}
  for block in plan.blocks:
    _check_block(plan, block)
    first = seen.setdefault(block.name, block)
    if (first.terms is not block.terms and dict(first.terms) != dict(block.terms)
        or first.bn_train != block.bn_train):
      raise ValueError(f"block '{block.name}': two blocks of this name have different terms or "
                       "bn_train; name them apart (one compiled step per name).")
  used = {n for b in plan.blocks for n in b.terms}
  if plan.blocks and (unknown := set(plan.weights) - used):
    raise ValueError(f"weights: {sorted(unknown)} belong to no term of the blocks "
                     f"(terms: {sorted(used)}).")
  check_weights(plan.weights)
  _number(plan.stop_every, "stop_every", minimum=1)
