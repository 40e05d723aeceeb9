"""Optimisers and training recipes (Optax).

Masks are the last transform of a chain, after weight decay and momentum, so a masked parameter
never moves (SalUn, CF-k; design.md).
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine")


class MaskState(NamedTuple):
  """Optimiser state of :func:`mask_updates`: the fixed mask."""

  mask: Any  # pytree of {0, 1} arrays shaped like the parameters


def mask_updates(mask) -> optax.GradientTransformation:
  """Multiplies every update by a fixed {0, 1} mask; place it last in the chain.

  After weight decay and momentum, so a masked parameter stays bit-identical (SalUn, CF-k;
  design.md). The mask lives in the optimiser state, an array argument of the compiled step, so a
  new mask needs no recompilation.
  """

  def init_fn(params):
    del params
    return MaskState(jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), mask))

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, state.mask), state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(name: str, *, learning_rate: float | optax.Schedule, momentum: float = 0.0,
                   weight_decay: float = 0.0, mask=None) -> optax.GradientTransformation:
  """SGD (coupled L2 weight decay, as PyTorch's SGD) or Adam / AdamW, optionally masked.

  Args:
    name: "sgd", "adam" (coupled L2, PyTorch Adam's ``weight_decay``) or "adamw" (decoupled).
    mask: optional pytree of {0, 1} like the parameters; masked-out entries never move.
  """
  if name == "sgd":
    parts = [optax.add_decayed_weights(weight_decay) if weight_decay else None,
             optax.sgd(learning_rate, momentum=momentum or None)]
  elif name == "adam":
    parts = [optax.add_decayed_weights(weight_decay) if weight_decay else None,
             optax.adam(learning_rate)]
  elif name == "adamw":
    parts = [optax.adamw(learning_rate, weight_decay=weight_decay)]
  else:
    raise ValueError(f"optimizer: unknown optimiser {name!r}; allowed: {', '.join(OPTIMIZERS)}.")
  if mask is not None:
    parts.append(mask_updates(mask))
  return optax.chain(*[p for p in parts if p is not None])


def piecewise_schedule(base: float, boundaries: dict[int, float] | None = None) -> optax.Schedule:
  """Constant ``base`` learning rate multiplied by ``factor`` from each boundary step on."""
  if not boundaries:
    return optax.constant_schedule(base)
  return optax.piecewise_constant_schedule(base, {int(k): float(v) for k, v in boundaries.items()})


def cosine_schedule(base: float, epochs: int, steps_per_epoch: int) -> optax.Schedule:
  """η_e = base · ½(1 + cos(π e / E)) in epoch e = ⌊step / steps_per_epoch⌋ of E ``epochs``: a
  cosine annealed once per epoch (PyTorch's ``CosineAnnealingLR(T_max=E)`` stepped each epoch).

  >>> [round(float(cosine_schedule(0.05, 5, 10)(s)), 4) for s in (0, 9, 10, 49)]
  [0.05, 0.05, 0.0452, 0.0048]
  """
  def schedule(count):
    epoch = jnp.floor_divide(count, steps_per_epoch)
    return base * 0.5 * (1.0 + jnp.cos(math.pi * epoch / epochs))

  return schedule


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a classifier is trained. ``schedule``: "step" (``decay`` maps epoch → learning-rate
  factor from that epoch) or "cosine" (:func:`cosine_schedule` over ``epochs``, no ``decay``).

  Raises:
    ValueError: an unknown schedule, or a cosine schedule with ``decay`` steps.
  """

  optimizer: str = "adam"
  learning_rate: float = 1e-3
  momentum: float = 0.0
  weight_decay: float = 0.0
  epochs: int = 20
  batch_size: int = 128
  decay: tuple[tuple[int, float], ...] = ()
  augment: bool = False  # random crop (pad 4) + flip, for CIFAR-style images
  schedule: str = "step"

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule: {self.schedule!r}; allowed: {', '.join(SCHEDULES)}.")
    if self.schedule == "cosine" and self.decay:
      raise ValueError(f"decay: {self.decay} with schedule 'cosine'; a cosine schedule takes no "
                       "decay steps (set decay=()).")

  def steps_per_epoch(self, num_examples: int) -> int:
    return -(-num_examples // self.batch_size)

  def make_tx(self, num_examples: int, mask=None):
    spe = self.steps_per_epoch(num_examples)
    if self.schedule == "cosine":
      schedule = cosine_schedule(self.learning_rate, self.epochs, spe)
    else:
      schedule = piecewise_schedule(self.learning_rate, {e * spe: f for e, f in self.decay})
    return make_optimizer(self.optimizer, learning_rate=schedule, momentum=self.momentum,
                          weight_decay=self.weight_decay, mask=mask)


def recipe_key(recipe: Mapping) -> dict:
  """A recipe's fields as a cache key; ``schedule`` only where it is not the default "step", so
  that models cached before the field existed keep their key."""
  out = dict(recipe)
  if out.get("schedule", "step") == "step":
    out.pop("schedule", None)
  return out
