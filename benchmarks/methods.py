"""Per-method unlearning wall time and steps/s (small CNN, CPU), on digits and Fashion-MNIST.

For each method: its ``small`` (digits) or ``fashion_mnist`` profile's plan run once from a
trained original (class 0 forgotten)
through :func:`unlearn_jax.unlearning.unlearn`; the wall time counts everything the method
does (plan building — perturbed sets, saliency masks, FGSM relabelling, noise — steps and
finalize) and includes compilation; steps/s divides the optimiser steps by it. ``--epochs`` caps
every method's epochs (the full run's time is then projected from steps/s).

Run: ``python benchmarks/methods.py --dataset digits`` or ``--dataset fashion_mnist``.
"""

import os

_COUNT_FLAG = "--xla_force_host_platform_device_count"
if _COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_COUNT_FLAG}={os.cpu_count()}"

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from unlearn_jax.data.datasets import load_dataset  # noqa: E402
from unlearn_jax.data.splits import ForgetSpec, make_splits  # noqa: E402
from unlearn_jax.evaluation.outputs import accuracy  # noqa: E402
from unlearn_jax.methods import METHODS, Original, UnlearningData, get_method  # noqa: E402
from unlearn_jax.methods import method_data as data_for  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.optim import Recipe  # noqa: E402
from unlearn_jax.training.classifier import train_classifier  # noqa: E402
from unlearn_jax.unlearning import unlearn  # noqa: E402


def planned_steps(name: str, config, original: Original, data: UnlearningData) -> int:
  return get_method(name).build(config, original, data, 0).num_steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="digits", choices=("digits", "fashion_mnist"))
  parser.add_argument("--methods", default=",".join(sorted(METHODS)))
  parser.add_argument("--epochs", type=int, default=0, help="cap each method's epochs")
  args = parser.parse_args()
  cap = args.epochs
  profile = "fashion_mnist" if args.dataset == "fashion_mnist" else "small"
  data = load_dataset(args.dataset)
  model = make_model("small_cnn", num_classes=data.num_classes, input_shape=data.image_shape,
                     mean=data.mean, std=data.std)
  recipe = Recipe(epochs=15 if args.dataset == "digits" else 3,
                  batch_size=64 if args.dataset == "digits" else 128)
  start = time.perf_counter()
  state, _ = train_classifier(model, data.train, recipe, seed=0, progress=False)
  print(f"{args.dataset}: original trained in {time.perf_counter() - start:.1f} s, test "
        f"accuracy {accuracy(model, state.params, state.model_state, data.test):.1f}%; "
        f"{jax.device_count()} {jax.default_backend()} devices; epochs cap: {cap or 'none'}")
  original = Original(model, *jax.device_get((state.params, state.model_state)))
  splits = make_splits(data, ForgetSpec(classes=(0,)), seed=0)
  print(f"{'method':20s} {'steps':>7s} {'wall_s':>8s} {'steps/s':>8s} {'D_f acc':>8s} "
        f"{'full_steps':>10s} {'full_s(proj)':>12s}")
  for name in args.methods.split(","):
    method = get_method(name)
    default = method.hparams(profile)
    capped = bool(cap and "epochs" in default and default.epochs > cap)
    try:
      result = unlearn(method, original, splits, seed=0, profile=profile,
                       hparams={"epochs": cap} if capped else None, progress=False)
    except FloatingPointError as e:
      print(f"{name:20s} failed: {e}", flush=True)
      continue
    steps = int(result.history[-1]["step"]) if result.history else 0
    rate = steps / result.seconds if steps else float("nan")
    forget = accuracy(model, result.params, result.model_state, splits.forget)
    seen = data_for(method, splits.forget, splits.retain, splits.forget_classes, data.num_classes)
    full = planned_steps(name, default, original, seen) if capped else steps
    projected = full / rate if capped and steps else result.seconds
    print(f"{name:20s} {steps:7d} {result.seconds:8.1f} {rate:8.1f} {forget:8.1f} {full:10d} "
          f"{projected:12.0f}", flush=True)


if __name__ == "__main__":
  main()
