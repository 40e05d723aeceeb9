"""Training a classifier from scratch: the original model and the Retrain oracle.

Both minimise E CE(h_θ(x), y) over their training set (all of D for the original, D_r for
Retrain) with one recipe (:class:`Recipe`). :func:`train_classifier` trains one model;
:func:`train_classifiers` trains K seeds at once as one vmapped program whose model axis is split
over the devices.
"""

from collections.abc import Sequence

import jax
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.batching import Stream
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import Model
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective
from unlearn_jax.optim import Recipe
from unlearn_jax.training import sharding
from unlearn_jax.training.loop import Hook, Segment, run_plan
from unlearn_jax.training.state import TrainState, create_train_state
from unlearn_jax.training.step import make_train_step

FROZEN = {"weights": WEIGHTS}


def _plan(step_fn, stream: Stream, epochs: int) -> list[Segment]:
  return [Segment(f"epoch{e}", step_fn, stream.steps_per_epoch,
                  lambda i, e=e: {"train": stream.batch(e * stream.steps_per_epoch + i)})
          for e in range(epochs)]


def train_classifier(
    model: Model,
    data: ArrayDataset,
    recipe: Recipe,
    *,
    seed: int,
    mesh: jax.sharding.Mesh | None = None,
    state: TrainState | None = None,
    checkpoint=None,
    checkpoint_every: int = 0,
    hooks: Sequence[Hook] = (),
    progress: bool = True,
    desc: str = "train",
) -> tuple[TrainState, list[dict]]:
  """Trains ``model`` on ``data`` from scratch (init, data order and augmentation from ``seed``).

  Pass ``state`` (restored from a checkpoint) to resume; the result is bit-identical to an
  uninterrupted run. The batch is split over ``mesh`` (default: all devices).
  """
  mesh = mesh or sharding.make_mesh()
  tx = recipe.make_tx(len(data))
  if state is None:
    params, model_state = model.init(seeding.device_key(seed, "init"))
    state = create_train_state(params, model_state, tx)
  state = sharding.replicate(state, mesh)
  step = sharding.jit_sharded(make_train_step(classifier_objective(model, augment=recipe.augment),
                                              tx), mesh)
  stream = Stream(data, recipe.batch_size, seed=seed, name="train")
  return run_plan(
      _plan(step, stream, recipe.epochs), state, key=seeding.device_key(seed, "steps"),
      frozen=sharding.replicate(FROZEN, mesh),
      place_batch=lambda b: sharding.shard_leading(b, mesh),
      checkpoint=checkpoint, checkpoint_every=checkpoint_every, hooks=hooks,
      progress=progress, desc=desc)


def train_classifiers(
    model: Model,
    data: ArrayDataset,
    recipe: Recipe,
    *,
    seeds: Sequence[int],
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    desc: str = "train×K",
) -> tuple[TrainState, list[dict]]:
  """Trains one model per seed at once: ``vmap`` over (state, batch, key), the model axis split
  over the mesh when the device count divides K (else replicated).

  Returns a state whose leaves have a leading axis of size K; model k equals
  ``train_classifier(..., seed=seeds[k])`` up to float reassociation.
  """
  mesh = mesh or sharding.make_mesh()
  split = len(seeds) % mesh.devices.size == 0
  tx = recipe.make_tx(len(data))
  init = jax.vmap(lambda k: create_train_state(*model.init(k), tx))
  state = init(jax.numpy.stack([seeding.device_key(s, "init") for s in seeds]))
  place = (lambda t: sharding.shard_leading(t, mesh, what="models")) if split else (
      lambda t: sharding.replicate(t, mesh))
  state = place(jax.device_get(state))
  step = make_train_step(classifier_objective(model, augment=recipe.augment), tx)
  vstep = jax.vmap(step, in_axes=(0, 0, 0, None))
  jitted = sharding.jit_sharded(vstep, mesh, split_state=split)
  streams = [Stream(data, recipe.batch_size, seed=s, name="train") for s in seeds]
  spe = streams[0].steps_per_epoch

  def batch_fn(e):
    return lambda i: {"train": jax.tree.map(
        lambda *xs: np.stack(xs), *[st.batch(e * spe + i) for st in streams])}

  segments = [Segment(f"epoch{e}", jitted, spe, batch_fn(e)) for e in range(recipe.epochs)]
  keys = place(jax.numpy.stack([seeding.device_key(s, "steps") for s in seeds]))
  return run_plan(segments, state, key=keys, frozen=sharding.replicate(FROZEN, mesh),
                  place_batch=place, progress=progress, desc=desc)
