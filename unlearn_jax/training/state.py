"""The train state: a frozen dataclass of arrays only, so it can be donated, vmapped, sharded."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
  """The step count, parameters, batch-norm statistics and optimiser state of one model."""

  step: jax.Array  # int32 scalar: number of updates applied
  params: Any
  model_state: Any  # batch-norm running statistics ({} without batch norm)
  opt_state: Any


def create_train_state(params, model_state, tx: optax.GradientTransformation) -> TrainState:
  """Step 0 at ``params`` with ``tx``'s initial state."""
  return TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))
