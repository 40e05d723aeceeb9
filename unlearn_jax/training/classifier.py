"""Training a classifier from scratch: the original model and the Retrain oracle.

Both minimise E CE(h_θ(x), y) over their training set (all of D for the original, D_r for
Retrain) with one :class:`~unlearn_jax.optim.Recipe`, through the plan executor.
"""

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import Model
from unlearn_jax.objectives import terms
from unlearn_jax.optim import Recipe
from unlearn_jax.training.execute import execute_plan, execute_population
from unlearn_jax.training.plan import Block, Data, Plan
from unlearn_jax.training.state import TrainState
from unlearn_jax.validation import check_numbers


def classifier_plan(model: Model, data: ArrayDataset, recipe: Recipe, seed: int) -> Plan:
  """``recipe.epochs`` epochs of CE on ``data`` (as data set ``"train"``, cropped and flipped
  when ``recipe.augment``) from a fresh init; init, data order and augmentation from ``seed``.

  Raises:
    ValueError: a recipe field out of range (named ``recipe.<field>``).
  """
  check_numbers(dataclasses.asdict(recipe), "recipe")
  params, model_state = model.init(seeding.device_key(seed, "init"))
  return Plan(model, params, model_state, recipe.make_tx(len(data)),
              data={"train": Data(data, recipe.batch_size, augment=recipe.augment)},
              blocks=[Block("train", {"ce": terms.cross_entropy("train")},
                            epochs=recipe.epochs)],
              weights={"ce": 1.0}, seed=seed)


def train_classifier(model: Model, data: ArrayDataset, recipe: Recipe, *, seed: int,
                     state: TrainState | None = None, **kwargs) -> tuple[TrainState, list[dict]]:
  """Trains ``model`` on ``data`` from scratch; init, order, augmentation from ``seed``.

  Pass a restored ``state`` to resume (the result is bit-identical to an uninterrupted run);
  ``kwargs`` go to :func:`~unlearn_jax.training.execute.execute_plan` (mesh, checkpoint,
  checkpoint_every, hooks, progress, desc).
  """
  return execute_plan(classifier_plan(model, data, recipe, seed),
                      key=seeding.device_key(seed, "steps"), state=state, **kwargs)


def train_classifiers(model: Model, data: ArrayDataset, recipe: Recipe, *, seeds: Sequence[int],
                      **kwargs) -> tuple[TrainState, list[dict]]:
  """One model per seed, trained at once as a vmapped population (leaves lead with K);
  ``kwargs`` go to :func:`~unlearn_jax.training.execute.execute_population`."""
  plans = [classifier_plan(model, data, recipe, s) for s in seeds]
  keys = jnp.stack([seeding.device_key(s, "steps") for s in seeds])
  return execute_population(plans, keys=keys, **kwargs)
