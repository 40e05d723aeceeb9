"""Models per second: a population trained as one vmapped program vs the same models one after
another (docs/math.md §7; the challenge scorer trains its 1,024 models sequentially).

The work: ``--models`` digits MLPs (or ``--model small_cnn``), each on its own balanced half of
the 1,437 training digits, ``--epochs`` epochs of Adam, batch 64 — the originals of U-LiRA. Timed,
each from a cold start (compilation included), in one process:

* ``population, sharded``: :func:`unlearn_jax.populations.train_population` over all devices
  (the model axis split over them);
* ``population, 1 device``: the same on a 1-device mesh (vmap alone);
* ``sequential, one step``: one jitted step compiled once and reused, model after model, batches
  from the same streams (the fastest one-at-a-time loop);
* ``sequential, train_classifier``: the library's one-model API per model (which compiles its
  step per call), on ``--sequential`` models, projected to all.

The models agree: the script checks that the first model of each run matches.
Run: ``python benchmarks/populations.py [--models 128] [--epochs 10]``.
"""

import os

_COUNT_FLAG = "--xla_force_host_platform_device_count"
if _COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_COUNT_FLAG}={os.cpu_count()}"

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_jax import seeding  # noqa: E402
from unlearn_jax.data.datasets import load_dataset  # noqa: E402
from unlearn_jax.data.memberships import balanced_masks  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.optim import Recipe  # noqa: E402
from unlearn_jax.populations import train_population  # noqa: E402
from unlearn_jax.training import sharding  # noqa: E402
from unlearn_jax.training.classifier import classifier_plan, train_classifier  # noqa: E402
from unlearn_jax.training.execute import block_objective, prepare  # noqa: E402
from unlearn_jax.training.state import create_train_state  # noqa: E402
from unlearn_jax.training.step import make_train_step  # noqa: E402


def sequential_one_step(model, data, masks, recipe, seeds):
  """Every model with one compiled step (the plans' own batches, keys and progress)."""
  plans = [classifier_plan(model, data.subset(np.flatnonzero(m)), recipe, s)
           for m, s in zip(masks, seeds, strict=True)]
  step = jax.jit(make_train_step(block_objective(plans[0], plans[0].blocks[0]), plans[0].tx),
                 donate_argnums=(0,))
  first = None
  for plan, seed in zip(plans, seeds, strict=True):
    state = jax.tree.map(jax.numpy.copy, create_train_state(plan.params, plan.model_state,
                                                            plan.tx))
    key = seeding.device_key(seed, "steps")
    prepared, done = prepare(plan), 0
    for block, position, n in prepared.schedule:
      for i in range(n):
        batch = prepared.batch(block, position + i, done, plan.num_steps)
        state, _ = step(state, batch, key, prepared.frozen)
        done += 1
    jax.block_until_ready(state)
    first = state.params if first is None else first
  return first


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", type=int, default=128)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--model", default="mlp", choices=("mlp", "small_cnn"))
  parser.add_argument("--sequential", type=int, default=8,
                      help="models timed with train_classifier (projected to --models)")
  args = parser.parse_args()
  data = load_dataset("digits")
  model = make_model(args.model, num_classes=10, input_shape=data.image_shape, mean=data.mean,
                     std=data.std)
  masks = balanced_masks(args.models, len(data.train), seed=0)
  seeds = list(range(args.models))
  recipe = Recipe(epochs=args.epochs, batch_size=64)
  print(f"{args.models} {args.model}s on digits halves, {args.epochs} epochs; "
        f"{jax.device_count()} {jax.default_backend()} devices; load average "
        f"{os.getloadavg()[0]:.2f}")

  def report(name, seconds, count=args.models):
    projected = seconds * args.models / count
    print(f"{name:34s} {projected:8.1f} s  {args.models / projected:8.1f} models/s"
          + ("" if count == args.models else f"  (timed {count}, projected)"))
    return projected

  times, firsts = {}, {}
  for name, devices in (("population, sharded", None), ("population, 1 device", 1)):
    start = time.perf_counter()
    population = train_population(model, data.train, recipe, seeds=seeds, masks=masks,
                                  mesh=sharding.make_mesh(devices), progress=False)
    times[name] = report(name, time.perf_counter() - start)
    firsts[name] = jax.tree.map(lambda x: x[0], population.params)
  start = time.perf_counter()
  firsts["sequential"] = sequential_one_step(model, data.train, masks, recipe, seeds)
  times["sequential"] = report("sequential, one step", time.perf_counter() - start)
  start = time.perf_counter()
  for k in range(args.sequential):
    train_classifier(model, data.train.subset(np.flatnonzero(masks[k])), recipe, seed=seeds[k],
                     progress=False)
  report("sequential, train_classifier", time.perf_counter() - start, args.sequential)
  diff = max(max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                 for a, b in zip(jax.tree.leaves(firsts[n]), jax.tree.leaves(firsts["sequential"]),
                                 strict=True)) for n in firsts)
  print(f"speed-up, population sharded vs sequential one step: "
        f"{times['sequential'] / times['population, sharded']:.2f}x "
        f"(vmap alone: {times['sequential'] / times['population, 1 device']:.2f}x); "
        f"first model agrees to {diff:.1e}")


if __name__ == "__main__":
  main()
