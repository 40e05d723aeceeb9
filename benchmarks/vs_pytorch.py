"""The small-CNN train steps side by side with the same steps written in PyTorch, on CPU.

One process times the steps at batch 128 on Fashion-MNIST images (28×28×1):

* CE: ours is the library's ``make_train_step(classifier_objective(small_cnn), sgd(0.01, momentum
  0.9))``; PyTorch's is the same model (conv32-relu-pool-conv64-relu-pool-dense128-relu-head,
  normalisation inside), cross-entropy and ``torch.optim.SGD``.
* Spotter: ours is the step of the spotter method's block (``spotter_terms()``, batch norm
  frozen) with the ``fashion_mnist`` profile's optimiser (SGD lr 1e-4, momentum 0.9, weight
  decay 5e-4) and the frozen teacher in ``frozen``; a forget batch of 128 images of class 0 and
  a perturbed batch of 128. PyTorch's step runs the teacher under ``no_grad`` on both
  batches, takes masked-softmax targets (class 0 removed), KL(p̃ ‖ p) on both batches,
  dispersion (mean same-label off-diagonal cosine of L2-normalised penultimate features, one Gram
  matrix), weights 0.7 / 0.3 / 1.0, and the same SGD.
* Spotter, targets given: the same step with the teacher's outputs on both batches computed once
  beforehand, as the ``spotter`` method runs it (its teacher is frozen and in eval mode, so they
  are constants): ours reads them from the batch (``execute.teacher_outputs``), PyTorch's takes
  the
  precomputed masked targets. Also printed: the method's step against the PyTorch step above
  (the reference implementation runs the teacher every step).
* Spotter, given, 1 program: the same step compiled as one program over both streams
  (``split_streams=False``, the accelerator default), to show what splitting buys on CPU.

Ours runs as the library runs it: ``execute.block_step`` (state donated; on CPU a two-stream
block runs each stream's gradient as its own program, then one update) with the
batch split over one host-platform CPU device per core (the script sets
``--xla_force_host_platform_device_count`` to ``os.cpu_count()`` unless XLA_FLAGS already does);
PyTorch runs with ``torch.set_num_threads(os.cpu_count())``.

First, a like-for-like check: the JAX parameters are copied into the PyTorch model (conv kernels
HWIO → OIHW; the dense kernel's rows permuted from Flax's (h, w, c) flatten order to PyTorch's
(c, h, w)) and both compute the loss and its gradient on the same batch (for Spotter with a
student different from its teacher, so every term is non-zero); the largest differences are
printed. Then, after ``--warmup`` steps each, ``--repeats`` timings of ``--steps`` consecutive
steps alternate between the two frameworks (order swapped every repeat, so a change in load hits
both alike); each reports the median wall time per step (JAX's clock stops once the state is
ready, ``block_until_ready``; PyTorch's CPU ops are synchronous), the process's CPU time per step
and images/s (first_s: ours's first step, compilation included). The ratio is PyTorch's time
over ours. Targets: CE ≥ 1, Spotter ≥ 1.25. The load
average is printed first: wall times grow with it.

A timing covers 47 steps by default, one epoch of a forgotten Fashion-MNIST class at batch 128,
as the methods run them. Short windows cost JAX's split steps a fixed ≈ 0.26 s per window on this
CPU (cause not identified; docs/performance.md, 2026-11-27): with ``--steps 10`` the Spotter step
reads ~60 ms where the same step runs at ~40 ms over 47 steps and in the runner's loop.

Needs the ``bench`` extra (``pip install -e .[bench]``, torch 2.13 CPU); no test or CI uses it.
Run: ``python benchmarks/vs_pytorch.py [--steps 47] [--repeats 7] [--warmup 3]``.
"""

import os

_COUNT_FLAG = "--xla_force_host_platform_device_count"
if _COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_COUNT_FLAG}={os.cpu_count()}"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch_reference import (  # noqa: E402  (benchmarks/, on the path when run as a script)
  TorchSmallCNN,
  torch_ce_loss,
  torch_layout,
  torch_spotter_loss,
  torch_spotter_targets,
)

from unlearn_jax.data.datasets import ArrayDataset, load_dataset  # noqa: E402
from unlearn_jax.methods import get_method  # noqa: E402
from unlearn_jax.methods.common import optimizer  # noqa: E402
from unlearn_jax.methods.spotter import spotter_terms, spotter_weights  # noqa: E402
from unlearn_jax.models import make_model  # noqa: E402
from unlearn_jax.objectives import make_objective, terms  # noqa: E402
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective  # noqa: E402
from unlearn_jax.optim import make_optimizer  # noqa: E402
from unlearn_jax.training import sharding  # noqa: E402
from unlearn_jax.training.execute import block_step, teacher_outputs  # noqa: E402
from unlearn_jax.training.plan import Block, Data, Plan  # noqa: E402
from unlearn_jax.training.state import create_train_state  # noqa: E402

BATCH = 128
FORGET_CLASS = 0
CE_LR, MOMENTUM = 0.01, 0.9
ONE_PROGRAM = "Spotter, given, 1 program"
TARGETS = {"CE": 1.0, "Spotter": 1.25, "Spotter, targets given": 1.25,
           ONE_PROGRAM: 1.25}  # PyTorch's / ours
SYNC_EVERY = 10  # JAX steps between host syncs, as the runner's loop (design.md: fake devices)


def torch_runner(loss_fn, model, opt):
  def run(n: int) -> None:
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      loss_fn(model).backward()
      opt.step()

  return run


# JAX side.

def jax_runner(step, state, batch, key, frozen):
  box = [state]

  def run(n: int) -> None:
    state = box[0]
    for i in range(n):
      state, metrics = step(state, batch, key, frozen)
      if (i + 1) % SYNC_EVERY == 0:
        jax.block_until_ready(metrics["loss"])
    box[0] = jax.block_until_ready(state)

  return run


def _stream(images, labels) -> dict:
  return {"image": images, "label": labels, "mask": np.ones(len(labels), np.float32)}


def compare(name: str, objective, params, batch, frozen, torch_model, torch_loss) -> None:
  """Prints |loss_jax − loss_torch| and the largest gradient difference, same weights and data."""
  grad_fn = jax.jit(jax.value_and_grad(objective, has_aux=True))
  (loss, _), grads = grad_fn(params, {}, batch, jax.random.key(0), frozen)
  torch_model.zero_grad()
  torch_value = torch_loss(torch_model)
  torch_value.backward()
  torch_value = torch_value.item()
  torch_grads = {k: p.grad.numpy() for k, p in torch_model.named_parameters()}
  ours = torch_layout(grads)
  grad_diff = max(float(np.max(np.abs(ours[k] - g))) for k, g in torch_grads.items())
  grad_scale = max(float(np.max(np.abs(g))) for g in torch_grads.values())
  print(f"check {name:8s} loss JAX {float(loss):.6f} PyTorch {torch_value:.6f} "
        f"|Δ| {abs(float(loss) - torch_value):.2e}; max |Δgrad| {grad_diff:.2e} "
        f"(max |grad| {grad_scale:.2e})", flush=True)


def time_alternating(runs: dict, *, steps: int, repeats: int, warmup: int) -> dict:
  """{name: (median wall s/step, median CPU s/step)}, repeats alternating between the runs."""
  for run in runs.values():
    run(warmup)
  walls = {name: [] for name in runs}
  cpus = {name: [] for name in runs}
  names = list(runs)
  for r in range(repeats):
    for name in names if r % 2 == 0 else names[::-1]:
      start, cpu_start = time.perf_counter(), time.process_time()
      runs[name](steps)
      walls[name].append((time.perf_counter() - start) / steps)
      cpus[name].append((time.process_time() - cpu_start) / steps)
  return {n: (statistics.median(walls[n]), statistics.median(cpus[n])) for n in names}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=47, help="steps per timing")
  parser.add_argument("--repeats", type=int, default=7, help="timings per median")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  args = parser.parse_args(argv)
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; jax {jax.__version__}, "
        f"{jax.device_count()} {jax.default_backend()} devices; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {threads} CPUs; batch {BATCH}", flush=True)

  data = load_dataset("fashion_mnist")
  model = make_model("small_cnn", num_classes=data.num_classes, input_shape=data.image_shape,
                     mean=data.mean, std=data.std)
  mesh = sharding.make_mesh()
  teacher_params, _ = model.init(jax.random.key(0))
  params, _ = model.init(jax.random.key(1))
  rng = np.random.default_rng(0)

  # CE step.
  images, labels = data.train.images[:BATCH], data.train.labels[:BATCH]
  ce_batch = {"train": _stream(images, labels), "progress": np.float32(0)}
  ce_frozen = {"weights": WEIGHTS}
  ce_tx = make_optimizer("sgd", learning_rate=CE_LR, momentum=MOMENTUM)
  ce_objective = classifier_objective(model)
  ce_torch = TorchSmallCNN(params, data.mean, data.std)
  ce_torch_batch = {"x": torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                    "y": torch.from_numpy(labels.astype(np.int64))}

  def ce_loss(m):
    return torch_ce_loss(m, ce_torch_batch)

  compare("CE", ce_objective, params, ce_batch, ce_frozen, ce_torch, ce_loss)

  # Spotter step: a forget batch of one class and a perturbed batch of other images of it.
  config = get_method("spotter").hparams("fashion_mnist")
  forget = np.flatnonzero(data.train.labels == FORGET_CLASS)
  xf = data.train.images[forget[:BATCH]]
  xp = np.clip(data.train.images[forget[BATCH:2 * BATCH]]
               + rng.uniform(-8 / 255, 8 / 255, xf.shape).astype(np.float32), 0.0, 1.0)
  yf = data.train.labels[forget[:BATCH]]
  sp_batch = {"forget": _stream(xf, yf), "perturbed": _stream(xp, yf), "progress": np.float32(0)}
  sp_terms = spotter_terms()
  forget_mask = np.arange(data.num_classes) == FORGET_CLASS
  sp_weights = spotter_weights(config.lambda1, config.lambda2)
  sp_frozen = {"weights": {k: jnp.float32(v) for k, v in sp_weights.items()},
               "teachers": {"original": (teacher_params, {})},
               "forget_mask": jnp.asarray(forget_mask)}
  sp_tx = optimizer(config)
  sp_objective = make_objective(model, sp_terms, bn_train=False)
  sp_torch = TorchSmallCNN(params, data.mean, data.std)
  teacher = TorchSmallCNN(teacher_params, data.mean, data.std).eval().requires_grad_(False)
  weights = {k: float(v) for k, v in sp_frozen["weights"].items()}
  sp_torch_batch = {"xf": torch.from_numpy(xf.transpose(0, 3, 1, 2).copy()),
                    "xp": torch.from_numpy(xp.transpose(0, 3, 1, 2).copy()),
                    "yf": torch.from_numpy(yf.astype(np.int64)),
                    "forget_mask": torch.from_numpy(forget_mask)}

  def sp_loss(m):
    return torch_spotter_loss(m, torch_spotter_targets(teacher, sp_torch_batch), sp_torch_batch,
                              weights)

  compare("Spotter", sp_objective, params, sp_batch, sp_frozen, sp_torch, sp_loss)

  # The same step with the teacher's outputs computed once beforehand (as the method runs it).
  given_batch = {**sp_batch, **{s: {**sp_batch[s], **teacher_outputs(
      model, ArrayDataset(sp_batch[s]["image"], sp_batch[s]["label"]),
      original=(teacher_params, {}))} for s in ("forget", "perturbed")}}
  given_torch = TorchSmallCNN(params, data.mean, data.std)
  given_targets = torch_spotter_targets(teacher, sp_torch_batch)

  def given_loss(m):
    return torch_spotter_loss(m, given_targets, sp_torch_batch, weights)

  compare("targets", sp_objective, params, given_batch, sp_frozen, given_torch, given_loss)

  runs, compile_s = {}, {}
  ce_block = Block("train", {"ce": terms.cross_entropy("train")})
  ce_plan = Plan(model, params, {}, ce_tx, {"train": Data(ArrayDataset(images, labels), BATCH)},
                 [ce_block], WEIGHTS, 0)
  sp_block = Block("spotter", sp_terms, driver="forget", bn_train=False)
  sp_plan = Plan(model, params, {}, sp_tx,
                 {s: Data(ArrayDataset(sp_batch[s]["image"], yf), BATCH)
                  for s in ("forget", "perturbed")},
                 [sp_block], sp_weights, 0, teachers={"original": (teacher_params, {})},
                 forget_mask=forget_mask)
  for name, plan, block, batch, frozen, split in (
      ("CE", ce_plan, ce_block, ce_batch, ce_frozen, None),
      ("Spotter", sp_plan, sp_block, sp_batch, sp_frozen, None),
      ("Spotter, targets given", sp_plan, sp_block, given_batch, sp_frozen, None),
      (ONE_PROGRAM, sp_plan, sp_block, given_batch, sp_frozen, False)):
    tx = plan.tx
    # A fresh copy: the step donates its state, which must not alias ``params``.
    state = jax.tree.map(jnp.copy, sharding.replicate(create_train_state(params, {}, tx), mesh))
    placed = sharding.shard_leading(batch, mesh)
    key = sharding.replicate(jax.random.key(1), mesh)
    frozen = sharding.replicate(frozen, mesh)
    step = block_step(plan, block, mesh, split_streams=split)
    start = time.perf_counter()
    state, _ = step(state, placed, key, frozen)
    jax.block_until_ready(state)
    compile_s[name] = time.perf_counter() - start
    runs[name, "jax"] = jax_runner(step, state, placed, key, frozen)
  runs["CE", "torch"] = torch_runner(ce_loss, ce_torch, torch.optim.SGD(
      ce_torch.parameters(), lr=CE_LR, momentum=MOMENTUM))
  for name, loss, net in (("Spotter", sp_loss, sp_torch),
                          ("Spotter, targets given", given_loss, given_torch),
                          (ONE_PROGRAM, given_loss, TorchSmallCNN(params, data.mean, data.std))):
    runs[name, "torch"] = torch_runner(loss, net, torch.optim.SGD(
        net.parameters(), lr=config.learning_rate, momentum=config.momentum,
        weight_decay=config.weight_decay))

  print(f"{'step':24s}{'framework':>10s}{'ms/step':>9s}{'cpu_ms':>8s}{'images/s':>10s}"
        f"{'first_s':>10s}")
  ratios, walls = {}, {}
  for name, images_per_step in (("CE", BATCH), ("Spotter", 2 * BATCH),
                                ("Spotter, targets given", 2 * BATCH), (ONE_PROGRAM, 2 * BATCH)):
    times = time_alternating({fw: runs[name, fw] for fw in ("jax", "torch")}, steps=args.steps,
                             repeats=args.repeats, warmup=args.warmup)
    for fw, (wall, cpu) in times.items():
      compiled = f"{compile_s[name]:10.2f}" if fw == "jax" else ""
      print(f"{name:24s}{fw:>10s}{1e3 * wall:9.1f}{1e3 * cpu:8.1f}"
            f"{images_per_step / wall:10.0f}{compiled}", flush=True)
      walls[name, fw] = wall
    ratios[name] = times["torch"][0] / times["jax"][0]
  for name, ratio in ratios.items():
    ok = ratio >= TARGETS[name]
    print(f"target: {name} step ≥ {TARGETS[name]:.2f}× PyTorch's speed: PyTorch/JAX = "
          f"{ratio:.2f}, {'met' if ok else 'MISSED'}")
  as_run = walls["Spotter", "torch"] / walls["Spotter, targets given", "jax"]
  print("the spotter method's step (targets given) against the reference's step (teacher every "
        f"step): PyTorch/JAX = {as_run:.2f} (timed in separate alternations)")
  print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
