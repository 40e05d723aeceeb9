"""Throughput and utilisation of training steps: one device and all devices, float32 and bfloat16
compute, data gathered on the host or on the device.

Every step is the library's own, run as the executor runs it: a :class:`~unlearn_jax.training.
plan.Plan` over a dataset kept as uint8 pixels (random, ``8 × batch`` examples of the model's
shape), prepared by ``execute.prepare`` and stepped by ``execute.block_step`` (state donated, the
batch split over a 1-D mesh). Steps:

* ``small_cnn``, ``mlp`` (Fashion-MNIST shape 28×28×1), ``resnet18`` (CIFAR 32×32×3): a classifier
  step, cross-entropy with SGD (learning rate 0.01, momentum 0.9);
* ``spotter``: the spotter method's step on the small CNN (masked KD on a forget batch and a
  perturbed batch of 128 each, dispersion; the ``fashion_mnist`` profile's optimiser; the
  teacher's outputs computed once beforehand, as the method runs it; on CPU one program per
  stream, ``split_streams``).

Columns: ``dtype``, the model's compute dtype (``make_model(..., dtype=)``: parameters stay
float32); ``data``, the data path (``host``: each step's batch gathered on the host and placed;
``device``: the dataset placed once, each step given example numbers and gathering in the
program); compile: seconds of the first step (compilation included); step: after warm-up, the
median over ``--repeats`` timings of ``--steps`` consecutive steps (host sync every 8, as the
runner), the clock stopped once the state is ready; ``cpu_ms``: the process's CPU time per step;
``GFLOP``: floating-point operations per step from XLA's cost analysis of the step compiled as
one program (``jitted.lower(...).compile().cost_analysis()``, summed over devices);
``GFLOP/s``: GFLOP / step time; ``util``: that rate over the ceiling for the row's dtype — on
CPU a matmul ceiling measured at the start of the same run (the best of 5 timings of one
1024×1024×1024 product per device, all devices at once), on GPU the device's dense peak
(datasheet; TF32 for float32, whose matrix products XLA runs in TF32 there by default); memory:
XLA's program size (arguments + temporaries, per device), the process's peak resident memory so
far (``ru_maxrss``) and each device's peak bytes in use where the backend reports it.

On CPU the devices are host-platform devices: unless XLA_FLAGS already sets
``--xla_force_host_platform_device_count``, the script sets it to ``os.cpu_count()`` before
importing JAX. ResNet-18 takes ~15 s a step on CPU (design.md): ask for it with ``--models``.
Run: ``python benchmarks/train_step.py [--models small_cnn,mlp,spotter] [--dtypes
float32,bfloat16] [--data host,device] [--steps N]``.
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_jax.data.datasets import ArrayDataset  # noqa: E402
from unlearn_jax.methods import get_method  # noqa: E402
from unlearn_jax.methods.common import optimizer  # noqa: E402
from unlearn_jax.methods.spotter import spotter_terms, spotter_weights  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.objectives import terms  # noqa: E402
from unlearn_jax.optim import make_optimizer  # noqa: E402
from unlearn_jax.training import sharding  # noqa: E402
from unlearn_jax.training.execute import block_objective, block_step, prepare  # noqa: E402
from unlearn_jax.training.plan import Block, Data, Plan  # noqa: E402
from unlearn_jax.training.state import create_train_state  # noqa: E402
from unlearn_jax.training.step import make_train_step  # noqa: E402

# step -> (model, input shape, default steps per timing, default repeats, default warm-up).
MODELS = {
    "small_cnn": ("small_cnn", (28, 28, 1), 10, 5, 3),
    "mlp": ("mlp", (28, 28, 1), 10, 5, 3),
    "spotter": ("small_cnn", (28, 28, 1), 10, 5, 3),
    "resnet18": ("resnet18", (32, 32, 3), 1, 2, 1),
}
TARGET_STEP_MS, TARGET_SPEEDUP = 130.0, 1.6  # small CNN, batch 128: 1 device; 1 → all devices.
MIB = 2.0**20
SYNC_EVERY = 8
CEILING_SIZE = 1024
# Dense peak FLOP/s by device kind (datasheets, SXM parts): float32 as TF32, bfloat16.
GPU_PEAKS = {"H200": {"float32": 494.7e12, "bfloat16": 989.4e12},
             "H100": {"float32": 494.7e12, "bfloat16": 989.4e12},
             "A100": {"float32": 156e12, "bfloat16": 312e12}}


def matmul_ceiling(mesh: jax.sharding.Mesh, dtype: str, repeats: int = 5) -> float:
  """FLOP/s of one CEILING_SIZE³ matrix product per device, all devices at once (best of
  ``repeats``)."""
  n = mesh.devices.size
  a = sharding.shard_leading(jnp.ones((n, CEILING_SIZE, CEILING_SIZE), dtype), mesh)
  product = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x))
  jax.block_until_ready(product(a))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(product(a))
    best = min(best, time.perf_counter() - start)
  return 2 * n * CEILING_SIZE**3 / best


def peak(mesh: jax.sharding.Mesh, dtype: str, ceilings: dict) -> float:
  """The dense peak of the mesh's GPUs for ``dtype``, else the measured matmul ceiling."""
  kind = mesh.devices.flat[0].device_kind
  for name, peaks in GPU_PEAKS.items():
    if jax.default_backend() == "gpu" and name in kind:
      return peaks[dtype] * mesh.devices.size
  return ceilings[mesh.devices.size, dtype]


def _pixels(rng, n: int, shape) -> np.ndarray:
  return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def make_plan(name: str, dtype: str, batch_size: int, width: float) -> Plan:
  """The plan of step ``name`` over random data of 8 batches."""
  model_name, shape, *_ = MODELS[name]
  options = {"width": width} if model_name == "resnet18" else {}
  if dtype != "float32":
    options["dtype"] = dtype
  model = make_model(model_name, num_classes=10, input_shape=shape, mean=(0.5,) * shape[-1],
                     std=(0.25,) * shape[-1], **options)
  rng = np.random.default_rng(0)
  n = 8 * batch_size
  labels = rng.integers(0, 10, n).astype(np.int32)
  params, model_state = model.init(jax.random.key(0))
  if name != "spotter":
    data = ArrayDataset.from_pixels(_pixels(rng, n, shape), labels)
    return Plan(model, params, model_state, make_optimizer("sgd", learning_rate=0.01,
                                                           momentum=0.9),
                {"train": Data(data, batch_size)},
                [Block("train", {"ce": terms.cross_entropy("train")})], {"ce": 1.0}, 0)
  hp = get_method("spotter").hparams("fashion_mnist")
  labels[:] = 0  # one forgotten class
  forget = ArrayDataset.from_pixels(_pixels(rng, n, shape), labels)
  near = ArrayDataset(np.clip(forget.images + rng.uniform(-8 / 255, 8 / 255, forget.images.shape)
                              .astype(np.float32), 0.0, 1.0), labels)
  sets = {"forget": Data(forget, batch_size), "perturbed": Data(near, batch_size)}
  return Plan(model, params, model_state, optimizer(hp, sets["forget"].steps_per_epoch), sets,
              [Block("spotter", spotter_terms(), driver="forget", bn_train=False)],
              spotter_weights(hp.lambda1, hp.lambda2), 0,
              teachers={"original": model.init(jax.random.key(1))},
              forget_mask=np.arange(10) == 0)


def measure(name: str, num_devices: int, dtype: str, data: str, *, batch_size: int, steps: int,
            repeats: int, warmup: int, width: float, ceilings: dict) -> dict:
  """Compiles and times the step of ``name`` with the batch split over ``num_devices``."""
  plan = make_plan(name, dtype, batch_size, width)
  mesh = sharding.make_mesh(num_devices)
  prepared = prepare(plan, on_device=data == "device")
  block = plan.blocks[0]
  total = 10**6
  state = jax.tree.map(jnp.copy, sharding.replicate(
      create_train_state(plan.params, plan.model_state, plan.tx), mesh))
  key = sharding.replicate(jax.random.key(1), mesh)
  frozen = sharding.replicate(prepared.frozen, mesh)

  def batch(i: int):
    return sharding.shard_leading(prepared.batch(block, i, i, total), mesh)

  one_program = sharding.jit_sharded(make_train_step(block_objective(plan, block), plan.tx), mesh,
                                     donate=False)
  compiled = one_program.lower(state, batch(0), key, frozen).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get("flops", 0.0)) * num_devices
  program = compiled.memory_analysis()

  step_fn = block_step(plan, block, mesh)
  start = time.perf_counter()
  state, _ = step_fn(state, batch(0), key, frozen)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - start
  counter = [1]

  def run(n: int, state):
    for j in range(n):
      state, metrics = step_fn(state, batch(counter[0]), key, frozen)
      counter[0] += 1
      if (j + 1) % SYNC_EVERY == 0:
        jax.block_until_ready(metrics["loss"])
    return jax.block_until_ready(state)

  state = run(warmup, state)
  times, cpu_times = [], []
  for _ in range(repeats):
    start, cpu_start = time.perf_counter(), time.process_time()
    state = run(steps, state)
    times.append((time.perf_counter() - start) / steps)
    cpu_times.append((time.process_time() - cpu_start) / steps)
  step_s = statistics.median(times)
  device_peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in mesh.devices.flat]
  images = batch_size * len(block.streams)
  return {
      "model": name, "devices": num_devices, "dtype": dtype, "data": data,
      "compile_s": compile_s, "step_ms": 1e3 * step_s,
      "cpu_ms": 1e3 * statistics.median(cpu_times), "images_per_s": images / step_s,
      "gflop": flops / 1e9, "gflops": flops / step_s / 1e9,
      "util": flops / step_s / peak(mesh, dtype, ceilings),
      "program_mib": (program.argument_size_in_bytes + program.temp_size_in_bytes) / MIB,
      "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "device_peak_mib": None if None in device_peaks else max(device_peaks) / MIB,
  }


HEADER = (f"{'model':<10}{'dev':>4}{'dtype':>9}{'data':>7}{'compile_s':>10}{'step_ms':>9}"
          f"{'cpu_ms':>8}{'images/s':>10}{'GFLOP':>8}{'GFLOP/s':>9}{'util':>7}{'speedup':>8}"
          f"{'prog_MiB':>9}{'rss_MiB':>8}{'dev_MiB':>8}")


def _row(r: dict, speedup: float | None) -> str:
  device_peak = "n/a" if r["device_peak_mib"] is None else f"{r['device_peak_mib']:.0f}"
  ratio = "" if speedup is None else f"{speedup:.2f}x"
  return (f"{r['model']:<10}{r['devices']:>4}{r['dtype']:>9}{r['data']:>7}{r['compile_s']:>10.2f}"
          f"{r['step_ms']:>9.1f}{r['cpu_ms']:>8.1f}{r['images_per_s']:>10.0f}{r['gflop']:>8.2f}"
          f"{r['gflops']:>9.1f}{100 * r['util']:>6.1f}%{ratio:>8}{r['program_mib']:>9.1f}"
          f"{r['maxrss_mib']:>8.0f}{device_peak:>8}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="small_cnn,mlp,spotter",
                      help=f"comma-separated, from {', '.join(MODELS)}")
  parser.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes")
  parser.add_argument("--data", default="host,device", help="data paths: host, device")
  parser.add_argument("--steps", type=int, help="steps per timing (default: per model)")
  parser.add_argument("--repeats", type=int, help="timings per median (default: per model)")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--width", type=float, default=1.0, help="resnet18 width multiplier")
  args = parser.parse_args(argv)
  names, dtypes, paths = (args.models.split(","), args.dtypes.split(","), args.data.split(","))
  for flag, given, known in (("--models", names, MODELS), ("--dtypes", dtypes,
                                                           ("float32", "bfloat16")),
                             ("--data", paths, ("host", "device"))):
    if unknown := sorted(set(given) - set(known)):
      parser.error(f"{flag}: unknown {unknown}; known: {', '.join(known)}")

  n = jax.device_count()
  counts = sorted({1, n})
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, {n} devices "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, batch {args.batch_size}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '').strip()!r}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  ceilings = {(c, d): matmul_ceiling(sharding.make_mesh(c), d) for c in counts for d in dtypes}
  print("matmul ceiling (GFLOP/s, one 1024³ product per device): " + ", ".join(
      f"{c} dev {d} {v / 1e9:.1f}" for (c, d), v in ceilings.items()), flush=True)
  print(HEADER)
  results = {}
  for name in names:
    _, _, steps, repeats, warmup = MODELS[name]
    for dtype in dtypes:
      for data in paths:
        single = None
        for devices in counts:
          r = measure(name, devices, dtype, data, batch_size=args.batch_size,
                      steps=args.steps or steps, repeats=args.repeats or repeats, warmup=warmup,
                      width=args.width, ceilings=ceilings)
          speedup = None if single is None else single["step_ms"] / r["step_ms"]
          single = single or r
          results[name, devices, dtype, data] = r
          print(_row(r, speedup), flush=True)

  key = ("float32", paths[0])
  if "small_cnn" in names and ("small_cnn", 1, *key) in results:
    one, many = results["small_cnn", 1, *key], results["small_cnn", n, *key]
    ok = one["step_ms"] <= TARGET_STEP_MS
    print(f"target: small_cnn step on 1 device ≤ {TARGET_STEP_MS:.0f} ms: "
          f"{one['step_ms']:.1f} ms, {'met' if ok else 'MISSED'}")
    if n > 1:
      speedup = one["step_ms"] / many["step_ms"]
      ok = speedup >= TARGET_SPEEDUP
      print(f"target: small_cnn sharded over {n} devices ≥ {TARGET_SPEEDUP}x faster: "
            f"{speedup:.2f}x, {'met' if ok else 'MISSED'}")
  if ("spotter", n, *key) in results:
    print(f"spotter step ({n} devices, {key[0]}, {key[1]} data): "
          f"{100 * results['spotter', n, *key]['util']:.1f}% of the ceiling")
  print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
