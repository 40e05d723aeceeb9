"""The stateless training step and the optimiser pieces it is built from."""

from collections.abc import Callable
from typing import Any

import jax
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
  accumulate, apply = make_accumulate(objective, axis_name=axis_name), make_apply(tx)

  def step(state: TrainState, batch, key: jax.Array, frozen) -> tuple[TrainState, dict]:
    return apply(state, *accumulate(state, None, state.model_state, batch, key, frozen))

  return step


def make_accumulate(objective: Objective, *, axis_name: str | None = None):
  """``accumulate(state, total, model_state, batch, key, frozen) -> (total, model_state)``:
  ``total`` = (grads, metrics) of the objectives so far (None: none yet) plus this one's, at
  ``state.params`` with key ``fold_in(key, state.step)``; ``model_state`` flows through.

  Accumulating the parts of a sum of objectives one after another gives the gradient of the sum;
  on CPU each part's program is smaller (:func:`unlearn_jax.training.execute.block_step`).
  """

  def accumulate(state: TrainState, total, model_state, batch, key, frozen):
    key = jax.random.fold_in(key, state.step)
    params = state.params
    if axis_name is not None:
      params = jax.lax.pcast(params, axis_name, to="varying")
    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (loss, (model_state, aux)), grads = grad_fn(params, model_state, batch, key, frozen)
    metrics = {"loss": loss, **aux}
    if axis_name is not None:
      grads, metrics, model_state = jax.lax.pmean((grads, metrics, model_state), axis_name)
    if total is not None:
      grads = jax.tree.map(jax.numpy.add, total[0], grads)
      metrics = {**total[1], **metrics, "loss": total[1]["loss"] + loss}
    return (grads, metrics), model_state

  return accumulate


def make_apply(tx: optax.GradientTransformation):
  """``apply(state, (grads, metrics), model_state) -> (state, metrics)``: one optimiser update;
  adds ``grad_norm`` to the metrics."""

  def apply(state: TrainState, total, model_state) -> tuple[TrainState, dict]:
    grads, metrics = total
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        model_state=model_state, opt_state=opt_state)
    return new_state, metrics

  return apply
