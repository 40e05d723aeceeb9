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
    metrics["grad_norm"] = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        model_state=model_state, opt_state=opt_state)
    return new_state, metrics

  return step
