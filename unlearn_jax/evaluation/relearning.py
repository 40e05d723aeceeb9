"""Few-shot relearning ("relearn time", docs/math.md §6.4): fine-tune θ on K labelled forget images
with CE and count the steps until forget accuracy comes back.

A model that only hid the forgotten classes relearns them in a few steps; Retrain θ_r, which
never saw them, is the reference. The same ``seed`` draws the same shots, so the numbers of two
models (θ_u and θ_r) are directly comparable. The whole run (every step and the forget accuracy
after it) is one jitted ``lax.scan``.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.batching import pad_to_multiple
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.models import Model
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective
from unlearn_jax.optim import make_optimizer
from unlearn_jax.training.state import create_train_state
from unlearn_jax.training.step import make_train_step

EVAL_SETS = ("forget", "test_forget")


def _chunks(data: ArrayDataset, batch_size: int):
  """Images [nb, bs, H, W, C], labels [nb, bs] and mask [nb, bs], padded with mask 0."""
  n = len(data)
  size = pad_to_multiple(n, batch_size)
  index = np.concatenate([np.arange(n), np.zeros(size - n, np.int64)])
  mask = (np.arange(size) < n).astype(np.float32)
  return (data.images[index].reshape(-1, batch_size, *data.images.shape[1:]),
          data.labels[index].reshape(-1, batch_size), mask.reshape(-1, batch_size))


@functools.cache
def _relearn_fn(model: Model, steps: int, momentum: float):
  """Jitted (params, state, shots, eval chunks, key, learning rate) → correct counts [steps + 1]
  on the evaluation set; the learning rate is an argument, so a sweep compiles once."""
  objective = classifier_objective(model)
  frozen = {"weights": WEIGHTS}

  def correct(params, model_state, chunks):
    def count(chunk):
      images, labels, mask = chunk
      logits = model.apply(params, model_state, images)[1]
      return jnp.sum((jnp.argmax(logits, axis=-1) == labels) * mask)

    return jnp.sum(jax.lax.map(count, chunks))

  def run(params, model_state, shots, chunks, key, learning_rate):
    tx = make_optimizer("sgd", learning_rate=learning_rate, momentum=momentum)
    step = make_train_step(objective, tx)

    def body(state, _):
      state, _ = step(state, {"train": shots}, key, frozen)
      return state, correct(state.params, state.model_state, chunks)

    state = create_train_state(params, model_state, tx)
    _, counts = jax.lax.scan(body, state, length=steps)
    return jnp.concatenate([correct(params, model_state, chunks)[None], counts])

  return jax.jit(run)


def relearn_curve(model: Model, params, model_state, shots: ArrayDataset,
                  eval_set: ArrayDataset, *, key: jax.Array, steps: int,
                  learning_rate: float = 0.01, momentum: float = 0.0,
                  eval_batch_size: int = 512) -> np.ndarray:
  """Acc_t(eval_set) after t = 0 … T full-batch SGD steps on CE(h_θ(x), y) over the shots.

  Batch norm trains with the shots' batch statistics (as the classifier objective does) and is
  evaluated in eval mode.

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
  chunks = _chunks(eval_set, min(eval_batch_size, len(eval_set)))
  batch = {"image": shots.images, "label": shots.labels,
           "mask": np.ones(len(shots), np.float32)}
  counts = _relearn_fn(model, steps, float(momentum))(
      params, model_state, batch, chunks, key, jnp.float32(learning_rate))
  return 100.0 * np.asarray(counts, np.float64) / len(eval_set)


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


__all__ = ["METRIC", "RelearnSettings", "relearn_curve", "relearn_time"]
