"""Few-shot relearning ("relearn time", docs/math.md §6.4): fine-tune θ on K labelled forget images
with CE and count the steps until forget accuracy comes back; and the fine-tuning curve it is
built on (:func:`finetune_curve`: any batches, any evaluation sets), which relearning on D_r
(:mod:`~unlearn_jax.evaluation.retain_relearning`) also runs.

A model that only hid the forgotten classes relearns them in a few steps; Retrain θ_r, which
never saw them, is the reference. The same ``seed`` draws the same shots, so the numbers of two
models (θ_u and θ_r) are directly comparable.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import accuracy
from unlearn_jax.models import Model
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective
from unlearn_jax.optim import OPTIMIZERS, make_optimizer
from unlearn_jax.training.state import create_train_state
from unlearn_jax.training.step import make_train_step

EVAL_SETS = ("forget", "test_forget")
SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.1  # a cosine schedule ends at COSINE_FLOOR × the learning rate


def check_finetune(*, optimizer: str, schedule: str, steps: int, eval_every: int,
                   where: str = "") -> None:
  """Raises ValueError naming ``<where><field>`` for an unknown optimiser or schedule, fewer
  than one step, or an evaluation interval that does not divide the steps."""
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"{where}optimizer: {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}.")
  if schedule not in SCHEDULES:
    raise ValueError(f"{where}schedule: {schedule!r}; allowed: {', '.join(SCHEDULES)}.")
  if steps < 1 or eval_every < 1 or steps % eval_every:
    raise ValueError(f"{where}steps, {where}eval_every: {steps}, {eval_every}; both must be "
                     "≥ 1 and eval_every must divide steps.")


@functools.cache
def _finetune_fns(model: Model, optimizer: str, momentum: float, schedule: str, steps: int):
  """Jitted ``init(params, state, learning_rate) -> TrainState`` and ``step(train_state, batch,
  key, learning_rate) -> TrainState``; the learning rate is an argument, so a sweep compiles
  once."""
  objective = classifier_objective(model)
  frozen = {"weights": WEIGHTS}

  def tx(learning_rate):
    rate = (optax.cosine_decay_schedule(learning_rate, steps, alpha=COSINE_FLOOR)
            if schedule == "cosine" else learning_rate)
    return make_optimizer(optimizer, learning_rate=rate, momentum=momentum)

  def init(params, model_state, learning_rate):
    return create_train_state(params, model_state, tx(learning_rate))

  def step(state, batch, key, learning_rate):
    return make_train_step(objective, tx(learning_rate))(state, {"train": batch}, key, frozen)[0]

  return jax.jit(init), jax.jit(step)


def finetune_curve(model: Model, params, model_state, batch: Callable[[int], dict], steps: int,
                   eval_sets: Sequence[ArrayDataset], *, key: jax.Array, eval_every: int = 1,
                   optimizer: str = "sgd", learning_rate: float = 0.01, momentum: float = 0.0,
                   schedule: str = "constant", eval_batch_size: int = 512) -> np.ndarray:
  """Acc_t(S) on each evaluation set S after t = 0, e, 2e, … T steps of CE fine-tuning, step t on
  ``batch(t)``.

  One jitted step per dispatch rather than a ``lax.scan``: on CPU, XLA runs convolutions inside
  a while loop 10–20× slower (docs/performance.md; 100 steps of the digits CNN: 12 s of CPU time
  in a scan, 0.5 s as a loop).

  Batch norm trains with each batch's statistics (as the classifier objective does) and is
  evaluated in eval mode. ``schedule="cosine"``: η_t = η (f + (1 − f)·½(1 + cos(π t / T))), f =
  :data:`COSINE_FLOOR` (PyTorch's ``CosineAnnealingLR`` to f·η, stepped per step).

  Args:
    model, params, model_state: the starting model θ.
    batch: t ↦ step t's {"image" [B, H, W, C], "label" [B], "mask" [B]} (B fixed).
    steps: T.
    eval_sets: the non-empty sets S measured. key: the steps' PRNG key.
    eval_every: e, which must divide T. optimizer: "sgd", "adam" or "adamw".
    learning_rate, momentum: η and SGD's momentum. schedule: "constant" or "cosine".
    eval_batch_size: images per forward pass of the evaluation.

  Returns:
    float64 [T / e + 1, len(eval_sets)] accuracies in %; row 0 is θ's own.

  Raises:
    ValueError: an empty evaluation set, or an invalid option (naming it).
  """
  check_finetune(optimizer=optimizer, schedule=schedule, steps=steps, eval_every=eval_every)
  if not eval_sets or any(len(s) == 0 for s in eval_sets):
    raise ValueError(f"eval_sets: sizes {[len(s) for s in eval_sets]}; need at least one set, "
                     "each non-empty.")
  init, step = _finetune_fns(model, optimizer, float(momentum), schedule, steps)
  learning_rate = jnp.float32(learning_rate)
  state = init(params, model_state, learning_rate)

  def measure(state):
    return [accuracy(model, state.params, state.model_state, s, batch_size=eval_batch_size)
            for s in eval_sets]

  rows = [measure(state)]
  for t in range(steps):
    state = step(state, batch(t), key, learning_rate)
    if (t + 1) % eval_every == 0:
      rows.append(measure(state))
  return np.asarray(rows, np.float64)


def relearn_curve(model: Model, params, model_state, shots: ArrayDataset,
                  eval_set: ArrayDataset, *, key: jax.Array, steps: int,
                  learning_rate: float = 0.01, momentum: float = 0.0,
                  eval_batch_size: int = 512) -> np.ndarray:
  """Acc_t(eval_set) after t = 0 … T full-batch SGD steps on CE(h_θ(x), y) over the shots
  (:func:`finetune_curve` with every step's batch the K shots).

  Args:
    model, params, model_state: the starting model θ.
    shots: the K labelled images fine-tuned on (one full batch per step).
    eval_set: where forget accuracy is measured (non-empty).
    key: the steps' PRNG key. steps: T.
    learning_rate, momentum: SGD's.
    eval_batch_size: images per forward pass of the evaluation.

  Returns:
    float64 [T + 1] accuracies in %; entry 0 is θ's own.

  Raises:
    ValueError: no shot, an empty ``eval_set`` or ``steps`` < 1.
  """
  if len(shots) == 0 or len(eval_set) == 0 or steps < 1:
    raise ValueError(f"shots, eval_set, steps: {len(shots)} shots, {len(eval_set)} evaluation "
                     f"images, {steps} steps; each must be ≥ 1.")
  batch = {"image": shots.images, "label": shots.labels,
           "mask": np.ones(len(shots), np.float32)}
  return finetune_curve(model, params, model_state, lambda _: batch, steps, [eval_set], key=key,
                        learning_rate=learning_rate, momentum=momentum,
                        eval_batch_size=eval_batch_size)[:, 0]


def relearn_time(model: Model, params, model_state, splits: Splits, *, seed: int, shots: int = 5,
                 threshold: float = 90.0, max_steps: int = 100, learning_rate: float = 0.01,
                 momentum: float = 0.0, eval_on: str = "test_forget",
                 eval_batch_size: int = 512) -> dict:
  """Steps of K-shot fine-tuning until forget accuracy reaches ``threshold`` (docs/math.md §6.4).

  Shots: K images of each class present in D_f, drawn from D_f by ``host_rng(seed,
  "relearn_shots")`` (the same for every model given the same seed and splits), fine-tuned on
  with CE by SGD for up to ``max_steps`` full-batch steps.

  Args:
    model, params, model_state: θ (θ_u, or θ_r as the reference).
    splits: the unlearning split.
    seed: the shots' and the steps' seed.
    shots: K per class. threshold: forget accuracy in % to reach.
    max_steps: the budget. learning_rate, momentum: SGD's.
    eval_on: "test_forget" (D_t^f, never fine-tuned on) or "forget" (D_f, holds the shots).
    eval_batch_size: images per forward pass of the evaluation.

  Returns:
    {"steps": the first t with Acc_t ≥ threshold, or ``max_steps`` if never, "reached": bool,
    "curve": [max_steps + 1] accuracies in %, "shot_index": positions of the shots in
    ``splits.forget``, "shots", "threshold", "eval_on", "max_steps", "learning_rate", "seed"}.

  Raises:
    ValueError: an empty D_f or evaluation set, K larger than a class's images in D_f, or an
      invalid option (the message names the field).
  """
  if eval_on not in EVAL_SETS:
    raise ValueError(f"eval_on: {eval_on!r}; allowed: {', '.join(EVAL_SETS)}.")
  if shots < 1 or max_steps < 1:
    raise ValueError(f"shots, max_steps: {shots}, {max_steps}; both must be ≥ 1.")
  if not 0.0 < threshold <= 100.0:
    raise ValueError(f"threshold: {threshold}; allowed (0, 100] (%).")
  forget = splits.forget
  if len(forget) == 0:
    raise ValueError("splits.forget: the forget set D_f is empty.")
  eval_set = forget if eval_on == "forget" else splits.test_forget
  if len(eval_set) == 0:
    raise ValueError(f"eval_on: the {eval_on} set is empty; use eval_on='forget'.")
  rng = seeding.host_rng(seed, "relearn_shots")
  index = []
  for c in np.unique(forget.labels):
    members = np.flatnonzero(forget.labels == c)
    if shots > len(members):
      raise ValueError(f"shots: K={shots} exceeds the {len(members)} images of class {c} in "
                       f"the forget set; allowed K ≤ {len(members)}.")
    index.append(rng.choice(members, size=shots, replace=False))
  index = np.concatenate(index)
  curve = relearn_curve(model, params, model_state, forget.subset(index), eval_set,
                        key=seeding.device_key(seed, "relearn_steps"), steps=max_steps,
                        learning_rate=learning_rate, momentum=momentum,
                        eval_batch_size=eval_batch_size)
  reached = np.flatnonzero(curve >= threshold)
  return {"steps": int(reached[0]) if len(reached) else int(max_steps),
          "reached": bool(len(reached)), "curve": curve.tolist(), "shot_index": index.tolist(),
          "shots": int(shots), "threshold": float(threshold), "eval_on": eval_on,
          "max_steps": int(max_steps), "learning_rate": float(learning_rate), "seed": int(seed)}


@dataclasses.dataclass(frozen=True)
class RelearnSettings(registry.Settings):
  """:func:`relearn_time`'s K ``shots``, accuracy ``threshold`` (%) and step budget."""

  shots: int = 5
  threshold: float = 90.0
  max_steps: int = 100


def _evaluate(model: Model, params, model_state, context, settings: RelearnSettings, *,
              seed: int) -> tuple[dict, dict]:
  """"relearn/steps": steps of few-shot fine-tuning until the forget accuracy is back."""
  rel = relearn_time(model, params, model_state, context.splits, seed=seed, shots=settings.shots,
                     threshold=settings.threshold, max_steps=settings.max_steps)
  return {"relearn/steps": float(rel["steps"])}, {}


METRIC = registry.register(registry.Metric("relearn", _evaluate, RelearnSettings,
                                           needs=("classes",)))


__all__ = ["COSINE_FLOOR", "METRIC", "RelearnSettings", "SCHEDULES", "check_finetune",
           "finetune_curve", "relearn_curve", "relearn_time"]
