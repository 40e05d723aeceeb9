"""Run by tests/test_populations.py in its own process with 8 fake CPU devices: a population of
MLPs on balanced halves of digits trained with the model axis split over 8 devices (K = 8, and
K = 6 padded to 8) and on a 1-device mesh. Prints JSON with the largest parameter difference."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"  # the fake CPU devices, also on a GPU machine

import jax  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_jax.data.datasets import load_dataset  # noqa: E402
from unlearn_jax.data.memberships import balanced_masks  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.optim import Recipe  # noqa: E402
from unlearn_jax.populations import train_population  # noqa: E402
from unlearn_jax.training import sharding  # noqa: E402


def main(data_dir: str) -> None:
  data = load_dataset("digits", data_dir=data_dir)
  model = make_model("mlp", num_classes=10, input_shape=data.image_shape, mean=data.mean,
                     std=data.std)
  masks = balanced_masks(8, len(data.train), seed=0)
  recipe = Recipe(epochs=1, batch_size=64)

  def run(count, devices):
    population = train_population(model, data.train, recipe, seeds=range(count),
                                  masks=masks[:count], mesh=sharding.make_mesh(devices),
                                  progress=False)
    return population.params, population.info["padded_models"]

  def diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

  one, _ = run(8, 1)
  eight, _ = run(8, 8)
  six, padded = run(6, 8)
  print(json.dumps({"devices": len(jax.devices()), "sharded": diff(eight, one),
                    "padded": diff(six, jax.tree.map(lambda x: x[:6], one)),
                    "padded_models": padded,
                    "distinct": diff(jax.tree.map(lambda x: x[0], one),
                                     jax.tree.map(lambda x: x[1], one))}))


if __name__ == "__main__":
  main(sys.argv[1])
