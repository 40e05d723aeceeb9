"""Throughput of the classifier training step, on one device and sharded over all devices.

The step is the library's own: ``make_train_step(classifier_objective(model), sgd(0.01, momentum
0.9))`` jitted by ``sharding.jit_sharded`` (state donated, batch split over a 1-D mesh). Inputs are
random images in [0, 1] of the model's dataset shape (Fashion-MNIST 28×28×1 for ``small_cnn`` and
``mlp``, CIFAR 32×32×3 for ``resnet18``). For each model and device count it measures:

* compile: seconds to lower and compile the step for that mesh;
* step: after warm-up steps, the median over ``--repeats`` timings of the wall time of
  ``--steps`` consecutive steps divided by ``--steps``, the clock stopped only once the new state
  is ready (``block_until_ready``); steps/s and images/s follow from it. ``cpu_ms`` is the
  process's CPU time (all threads) per step, timed alike: on a machine shared with other work the
  wall time grows with the load average (printed first) while the CPU time stays about the same;
* memory: XLA's compiled-program sizes (arguments + temporaries, per device), the process's peak
  resident memory so far (``ru_maxrss``, host, cumulative over the run) and, where the backend
  reports it, each device's peak bytes in use.

On CPU the devices are host-platform devices: unless XLA_FLAGS already sets
``--xla_force_host_platform_device_count``, the script sets it to ``os.cpu_count()`` before
importing JAX. Run: ``python benchmarks/train_step.py [--models small_cnn,mlp] [--steps N]``.
"""

import os

_COUNT_FLAG = "--xla_force_host_platform_device_count"
if _COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_COUNT_FLAG}={os.cpu_count()}"

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective  # noqa: E402
from unlearn_jax.optim import make_optimizer  # noqa: E402
from unlearn_jax.training import sharding  # noqa: E402
from unlearn_jax.training.state import create_train_state  # noqa: E402
from unlearn_jax.training.step import make_train_step  # noqa: E402

# model -> (input shape, default steps per timing, default repeats, default warm-up steps).
# ResNet-18 takes ~15 s a step on CPU (design.md), so it is timed on single steps.
MODELS = {
    "small_cnn": ((28, 28, 1), 10, 5, 3),
    "mlp": ((28, 28, 1), 10, 5, 3),
    "resnet18": ((32, 32, 3), 1, 2, 1),
}
TARGET_STEP_MS, TARGET_SPEEDUP = 130.0, 1.6  # small CNN, batch 128: 1 device; 1 → all devices.
MIB = 2.0**20


def _batch(shape, batch_size: int, num_classes: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {"train": {
      "image": rng.random((batch_size, *shape), dtype=np.float32),
      "label": rng.integers(0, num_classes, batch_size).astype(np.int32),
      "mask": np.ones(batch_size, np.float32),
  }}


def measure(name: str, num_devices: int, *, batch_size: int, steps: int, repeats: int,
            warmup: int, width: float) -> dict:
  """Compiles and times the step of ``name`` with the batch split over ``num_devices``."""
  shape = MODELS[name][0]
  options = {"width": width} if name == "resnet18" else {}
  model = make_model(name, num_classes=10, input_shape=shape, mean=(0.5,) * shape[-1],
                     std=(0.25,) * shape[-1], **options)
  tx = make_optimizer("sgd", learning_rate=0.01, momentum=0.9)
  mesh = sharding.make_mesh(num_devices)
  state = sharding.replicate(create_train_state(*model.init(jax.random.key(0)), tx), mesh)
  batch = sharding.shard_leading(_batch(shape, batch_size, 10), mesh)
  key = sharding.replicate(jax.random.key(1), mesh)
  frozen = sharding.replicate({"weights": WEIGHTS}, mesh)
  jitted = sharding.jit_sharded(make_train_step(classifier_objective(model), tx), mesh)

  start = time.perf_counter()
  compiled = jitted.lower(state, batch, key, frozen).compile()
  compile_s = time.perf_counter() - start
  program = compiled.memory_analysis()

  def run(n: int, state):
    for _ in range(n):
      state, metrics = compiled(state, batch, key, frozen)
    return jax.block_until_ready((state, metrics))[0]

  state = run(warmup, state)
  times, cpu_times = [], []
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    state = run(steps, state)
    times.append((time.perf_counter() - start) / steps)
    cpu_times.append((time.process_time() - cpu_start) / steps)
  step_s = statistics.median(times)
  device_peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in mesh.devices.flat]
  return {
      "model": name, "devices": num_devices, "compile_s": compile_s, "step_ms": 1e3 * step_s,
      "cpu_ms": 1e3 * statistics.median(cpu_times), "steps_per_s": 1 / step_s,
      "images_per_s": batch_size / step_s,
      "program_mib": (program.argument_size_in_bytes + program.temp_size_in_bytes) / MIB,
      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "device_peak_mib": None if None in device_peaks else max(device_peaks) / MIB,
  }


def _row(r: dict, speedup: float | None) -> str:
  peak = "n/a" if r["device_peak_mib"] is None else f"{r['device_peak_mib']:.0f}"
  ratio = "" if speedup is None else f"{speedup:.2f}x"
  return (f"{r['model']:<10}{r['devices']:>4}{r['compile_s']:>10.2f}{r['step_ms']:>10.1f}"
          f"{r['cpu_ms']:>9.1f}"
          f"{r['steps_per_s']:>9.2f}{r['images_per_s']:>10.0f}{ratio:>9}{r['program_mib']:>10.1f}"
          f"{r['maxrss_mib']:>10.0f}{peak:>10}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="small_cnn,mlp,resnet18",
                      help=f"comma-separated, from {', '.join(MODELS)}")
  parser.add_argument("--steps", type=int, help="steps per timing (default: per model)")
  parser.add_argument("--repeats", type=int, help="timings per median (default: per model)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--width", type=float, default=1.0, help="resnet18 width multiplier")
  args = parser.parse_args(argv)
  names = args.models.split(",")
  unknown = sorted(set(names) - set(MODELS))
  if unknown:
    parser.error(f"--models: unknown {unknown}; known: {', '.join(MODELS)}")

  n = jax.device_count()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {n} devices "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, batch {args.batch_size}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '').strip()!r}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  print(f"{'model':<10}{'dev':>4}{'compile_s':>10}{'step_ms':>10}{'cpu_ms':>9}{'steps/s':>9}{'images/s':>10}"
        f"{'speedup':>9}{'prog_MiB':>10}{'rss_MiB':>10}{'dev_MiB':>10}")
  results = {}
  for name in names:
    _, steps, repeats, warmup = MODELS[name]
    single = None
    for devices in sorted({1, n}):
      r = measure(name, devices, batch_size=args.batch_size, steps=args.steps or steps,
                  repeats=args.repeats or repeats, warmup=warmup, width=args.width)
      speedup = None if single is None else single["step_ms"] / r["step_ms"]
      single = single or r
      results[name, devices] = r
      print(_row(r, speedup), flush=True)

  if "small_cnn" in names:
    one, many = results["small_cnn", 1], results["small_cnn", n]
    ok = one["step_ms"] <= TARGET_STEP_MS
    print(f"target: small_cnn step on 1 device ≤ {TARGET_STEP_MS:.0f} ms: "
          f"{one['step_ms']:.1f} ms, {'met' if ok else 'MISSED'}")
    if n > 1:
      speedup = one["step_ms"] / many["step_ms"]
      ok = speedup >= TARGET_SPEEDUP
      print(f"target: small_cnn sharded over {n} devices ≥ {TARGET_SPEEDUP}x faster: "
            f"{speedup:.2f}x, {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
  main()
