"""Pieces the method files share: the optimiser of a method's hyper-parameters, the "until
forgotten" stop rule, and one-term fine-tuning plans."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optax

from unlearn_jax.data.batching import iterate
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import Model, eval_forward
from unlearn_jax.optim import make_optimizer, piecewise_schedule

SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}


def optimizer(hp: Mapping[str, Any], steps_per_epoch: int | Sequence[int] = 1, *,
              mask=None) -> optax.GradientTransformation:
  """``hp``'s optimiser (``optimizer``, ``learning_rate``, ``momentum``, ``weight_decay``);
  ``hp["decay"]`` (if present) maps epoch → learning-rate factor from that epoch on.

  ``steps_per_epoch`` is a constant, or the first step of every epoch when epochs differ.
  """
  def start(e: int) -> int:
    if isinstance(steps_per_epoch, int):
      return e * steps_per_epoch
    return steps_per_epoch[e] if e < len(steps_per_epoch) else steps_per_epoch[-1]

  schedule = piecewise_schedule(hp["learning_rate"],
                                {start(int(e)): f for e, f in dict(hp.get("decay", ()) or ())
                                 .items()})
  return make_optimizer(hp["optimizer"], learning_rate=schedule, momentum=hp["momentum"],
                        weight_decay=hp["weight_decay"], mask=mask)


def forget_accuracy_at_most(model: Model, forget: ArrayDataset, threshold: float | None,
                            *, max_examples: int = 1024,
                            batch_size: int = 512) -> Callable[[Any, Any], bool] | None:
  """A stop rule: True once the model's accuracy (%) on ``forget`` is ≤ ``threshold`` (None: no
  rule). The common "ascend until forgotten" early stop, checked on the first ``max_examples``
  of D_f (so it stays cheap on large forget sets)."""
  if threshold is None:
    return None
  forget = forget.subset(np.arange(min(max_examples, len(forget))))
  forward = eval_forward(model)

  def stop(params, model_state) -> bool:
    correct = sum(int(np.sum((np.argmax(forward(params, model_state, b["image"])[1], -1)
                              == b["label"]) * b["mask"])) for b in iterate(forget, batch_size))
    return 100.0 * correct / len(forget) <= threshold

  return stop
