"""The stateless training step and the optimiser pieces it is built from."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from unlearn_jax.objectives import Objective
from unlearn_jax.training.state import TrainState

Step = Callable[[TrainState, Any, jax.Array, Any], tuple[TrainState, dict[str, jax.Array]]]


def make_train_step(objective: Objective, tx: optax.GradientTransformation, *,
                    axis_name: str | None = None) -> Step:
  """Returns the pure, unjitted ``step(state, batch, key, frozen) -> (state, metrics)``.

  The step's randomness is ``fold_in(key, state.step)``, so a resumed run draws exactly what an
  uninterrupted one would. With ``axis_name`` the step runs under the caller's ``pmap`` or
  ``shard_map`` over that axis: parameters are cast to device-varying before differentiation and
  gradients, metrics and batch-norm statistics are averaged over the axis, which is exact in both
  (design.md). Without it, use ``jax.jit`` over a mesh (:mod:`unlearn_jax.training.sharding`).

  Metrics: ``loss``, each term's ``"<name>/loss"``, ``grad_norm``.
  """

  def step(state: TrainState, batch, key: jax.Array, frozen) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(key, state.step)
    params = state.params
    if axis_name is not None:
      params = jax.lax.pcast(params, axis_name, to="varying")
    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (loss, (model_state, aux)), grads = grad_fn(params, state.model_state, batch, key, frozen)
    metrics = {"loss": loss, **aux}
    if axis_name is not None:
      grads, metrics, model_state = jax.lax.pmean((grads, metrics, model_state), axis_name)
    metrics["grad_norm"] = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        model_state=model_state, opt_state=opt_state)
    return new_state, metrics

  return step


class MaskState(NamedTuple):
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
    raise ValueError(f"optimizer.name: unknown optimiser {name!r}; allowed: sgd, adam, adamw.")
  if mask is not None:
    parts.append(mask_updates(mask))
  return optax.chain(*[p for p in parts if p is not None])


def piecewise_schedule(base: float, boundaries: dict[int, float] | None = None) -> optax.Schedule:
  """Constant ``base`` learning rate multiplied by ``factor`` from each boundary step on."""
  if not boundaries:
    return optax.constant_schedule(base)
  return optax.piecewise_constant_schedule(base, {int(k): float(v) for k, v in boundaries.items()})
