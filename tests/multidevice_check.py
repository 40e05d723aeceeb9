"""Run by tests/test_training.py in its own process with 8 fake CPU devices: the same 10 steps
of the small-CNN train step on one device, jit over an 8-device mesh, pmap and shard_map.
Prints JSON with the largest parameter difference of each path from the single-device run."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"  # the fake CPU devices, also on a GPU machine

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from unlearn_jax.data.batching import Stream  # noqa: E402
from unlearn_jax.data.datasets import load_dataset  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective  # noqa: E402
from unlearn_jax.optim import make_optimizer  # noqa: E402
from unlearn_jax.training import sharding  # noqa: E402
from unlearn_jax.training.state import create_train_state  # noqa: E402
from unlearn_jax.training.step import make_train_step  # noqa: E402

STEPS = 10


def main(data_dir: str) -> None:
  data = load_dataset("digits", data_dir=data_dir)
  model = make_model("small_cnn", num_classes=10, input_shape=data.image_shape, mean=data.mean,
                     std=data.std)
  tx = make_optimizer("sgd", learning_rate=0.05, momentum=0.9, weight_decay=5e-4)
  objective = classifier_objective(model)
  stream = Stream(data.train, 64, seed=0, name="train")
  batches = [{"train": stream.batch(i)} for i in range(STEPS)]  # full batches only
  frozen = {"weights": {k: jnp.float32(v) for k, v in WEIGHTS.items()}}
  key = jax.random.key(0)
  fresh = lambda: create_train_state(*model.init(jax.random.key(1)), tx)  # noqa: E731

  def run(step_fn, place_state, place_batch, read):
    state = place_state(fresh())
    for b in batches:
      state, _ = step_fn(state, place_batch(b), key, frozen)
      jax.block_until_ready(state)
    return read(state)

  plain = make_train_step(objective, tx)
  single_mesh = sharding.make_mesh(1)
  single = run(sharding.jit_sharded(plain, single_mesh),
               lambda s: sharding.replicate(s, single_mesh),
               lambda b: sharding.shard_leading(b, single_mesh), lambda s: s.params)

  mesh = sharding.make_mesh(8)
  meshed = run(sharding.jit_sharded(plain, mesh), lambda s: sharding.replicate(s, mesh),
               lambda b: sharding.shard_leading(b, mesh), lambda s: s.params)

  axis_step = make_train_step(objective, tx, axis_name="data")
  pmapped = run(jax.pmap(axis_step, axis_name="data", in_axes=(0, 0, None, None)),
                lambda s: jax.tree.map(lambda x: jnp.stack([x] * 8), s),
                lambda b: jax.tree.map(lambda x: x.reshape(8, -1, *x.shape[1:]), b),
                lambda s: jax.tree.map(lambda x: x[0], s.params))

  shard_mapped = run(
      jax.jit(jax.shard_map(axis_step, mesh=mesh, in_specs=(P(), P("data"), P(), P()),
                            out_specs=(P(), P()))),
      lambda s: sharding.replicate(s, mesh), lambda b: sharding.shard_leading(b, mesh),
      lambda s: s.params)

  def diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

  moved = diff(single, fresh().params)
  print(json.dumps({"devices": len(jax.devices()), "moved": moved, "mesh": diff(meshed, single),
                    "pmap": diff(pmapped, single), "shard_map": diff(shard_mapped, single)}))


if __name__ == "__main__":
  main(sys.argv[1])
