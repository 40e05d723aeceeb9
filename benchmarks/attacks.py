"""Wall time of the attacks on real digits with the small CNN: the PRA grid, the recovery attacks,
and gradient inversion batched over many images against a Python loop over single images.

An original model is trained first (``train_classifier``, ``Recipe(epochs=15, batch_size=64)``)
on scikit-learn's digits (8×8×1) and class 0 is the forget class; the attacks run against that
model (their cost does not depend on which model they attack). For each attack it prints the first
call (compilation + forward passes + the attack) and a warm call; for gradient inversion the
per-image time of one jitted program over ``--images`` images (vmap over images and restarts,
``lax.scan`` over iterations) against ``gradient_inversion(..., batch_size=1)`` on
``--loop-images`` images one at a time (one jitted call per image; a first, untimed pass compiles
it), and their ratio (target ≥ 10×). The load average is printed first: on a shared machine wall
times grow with it; ``cpu`` is the process's CPU time over all threads.

Measured on 2 CPU cores the batched program is *slower* per image than the loop (about 0.6×):
vmapping a per-image parameter gradient turns each convolution's weight gradient into a
grouped convolution (``feature_group_count`` = images), which XLA:CPU runs slowly, and the
per-image work is O(|θ|) elementwise (a per-image gradient and its cosine), which batching does
not amortise on a CPU. The one-program form is meant for accelerators, where one 8×8 image
leaves the device mostly idle: on one NVIDIA H200 it is 9.98× the loop (docs/performance.md).

Run: ``python benchmarks/attacks.py [--iterations 100] [--restarts 1] [--images 64]``
(about a minute on 2 CPU cores with the defaults).
"""

import os

_COUNT_FLAG = "--xla_force_host_platform_device_count"
if _COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_COUNT_FLAG}={os.cpu_count()}"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from unlearn_jax.data.datasets import load_dataset  # noqa: E402
from unlearn_jax.data.splits import ForgetSpec, make_splits  # noqa: E402
from unlearn_jax.evaluation.inversion import InversionConfig, gradient_inversion  # noqa: E402
from unlearn_jax.evaluation.outputs import accuracy, model_outputs  # noqa: E402
from unlearn_jax.evaluation.prototypes import pra_grid, prototypical_relearning  # noqa: E402
from unlearn_jax.evaluation.recovery import recovery_attack  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.optim import Recipe  # noqa: E402
from unlearn_jax.training.classifier import train_classifier  # noqa: E402

TARGET_RATIO = 10.0
PRA_OPTIONS = {"shot_sources": ("forget", "test_forget")}


def timed(fn, *args, **kwargs):
  """(result, wall seconds, process CPU seconds) of one call, outputs fetched to the host."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = jax.device_get(fn(*args, **kwargs))
  return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, default=100)
  parser.add_argument("--restarts", type=int, default=1)
  parser.add_argument("--images", type=int, default=64)
  parser.add_argument("--loop-images", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPU cores, "
        f"{jax.device_count()} {jax.devices()[0].platform} devices; jax {jax.__version__}")
  with tempfile.TemporaryDirectory() as data_dir:
    digits = load_dataset("digits", data_dir=data_dir)
  model = make_model("small_cnn", num_classes=digits.num_classes, input_shape=digits.image_shape,
                     mean=digits.mean, std=digits.std)
  (state, _), wall, _ = timed(train_classifier, model, digits.train,
                              Recipe(epochs=15, batch_size=64), seed=args.seed, progress=False)
  params, model_state = state.params, state.model_state
  splits = make_splits(digits, ForgetSpec(classes=(0,)), seed=args.seed)
  print(f"original small CNN trained in {wall:.1f} s: test accuracy "
        f"{accuracy(model, params, model_state, digits.test):.1f}%; forget class 0: "
        f"|D_f| = {len(splits.forget)}, |D_t^f| = {len(splits.test_forget)}, "
        f"|S_cal| = {len(splits.calibration)}")

  runs = [timed(prototypical_relearning, model, params, model_state, splits, seed=args.seed,
                **PRA_OPTIONS) for _ in range(2)]
  result = runs[0][0]
  sets = {"forget": splits.forget, "test_forget": splits.test_forget,
          "test_retain": splits.test_retain}
  features = {name: (model_outputs(model, params, model_state, d)[0], d.labels)
              for name, d in sets.items()}
  _, grid_wall, grid_cpu = timed(pra_grid, params, features, splits.forget_classes,
                                 seed=args.seed, **PRA_OPTIONS)
  print(f"PRA grid, {len(result['settings'])} settings × 5 shot draws: first call "
        f"{runs[0][1]:.2f} s, warm {runs[1][1]:.3f} s (cpu {runs[1][2]:.3f} s); on precomputed "
        f"features (head edits + accuracies only) {1e3 * grid_wall:.1f} ms "
        f"(cpu {1e3 * grid_cpu:.1f} ms)")

  runs = [timed(recovery_attack, model, params, model_state, splits,
                original=(params, model_state)) for _ in range(2)]
  print(f"recovery FM + HR + HR with labels + HeadSwap: first call {runs[0][1]:.2f} s, "
        f"warm {runs[1][1]:.3f} s (cpu {runs[1][2]:.3f} s)")

  config = InversionConfig(iterations=args.iterations, restarts=args.restarts,
                           learning_rate=0.1)
  n = min(args.images, len(splits.forget))
  batch_data = splits.forget.subset(np.arange(n))
  loop_data = splits.forget.subset(np.arange(min(args.loop_images, n)))
  first, first_wall, _ = timed(gradient_inversion, model, params, model_state, batch_data,
                               seed=args.seed, config=config, batch_size=n)
  _, batch_wall, batch_cpu = timed(gradient_inversion, model, params, model_state, batch_data,
                                   seed=args.seed, config=config, batch_size=n)
  gradient_inversion(model, params, model_state, loop_data, seed=args.seed, config=config,
                     batch_size=1)  # compiles the single-image program and the scoring
  _, loop_wall, loop_cpu = timed(gradient_inversion, model, params, model_state, loop_data,
                                 seed=args.seed, config=config, batch_size=1)
  per_batched, per_loop = batch_wall / n, loop_wall / len(loop_data)
  ratio = per_loop / per_batched
  print(f"gradient inversion, T = {config.iterations}, R = {config.restarts}, 8×8×1: "
        f"PSNR {first['psnr_mean']:.1f} dB (start images {first['init_psnr_mean']:.1f} dB)")
  print(f"  batched over {n} images: {batch_wall:.2f} s → {1e3 * per_batched:.1f} ms/image "
        f"(cpu {1e3 * batch_cpu / n:.1f} ms/image; first call {first_wall:.2f} s with compile)")
  print(f"  loop over {len(loop_data)} single images: {1e3 * per_loop:.1f} ms/image "
        f"(cpu {1e3 * loop_cpu / len(loop_data):.1f} ms/image)")
  print(f"  speed-up of batching per image (loop time / batched time): {ratio:.2f}× (target ≥ "
        f"{TARGET_RATIO:.0f}×: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
  main()
