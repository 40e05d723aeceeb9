"""Batched, jitted forward passes over a dataset: the features and logits that every metric and
attack consumes. Batches are padded to a fixed size and split over the devices of a mesh."""

import numpy as np

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import as_dataset
from unlearn_jax.models import Model, eval_forward
from unlearn_jax.training import sharding


def model_outputs(model: Model, params, model_state, data: ArrayDataset, *,
                  batch_size: int = 512, mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """Eval-mode ``(features [N, d], logits [N, C])`` of every example of ``data`` (an
  :class:`ArrayDataset` or ``(images, labels)``), in order (on every process of a multi-process
  run)."""
  data = as_dataset(data)
  if len(data) == 0:
    return (np.zeros((0, model.feature_dim), np.float32),
            np.zeros((0, model.num_classes), np.float32))
  return sharding.map_batches(eval_forward(model), data, batch_size=batch_size,
                              replicated_args=(params, model_state), mesh=mesh)


def accuracy_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy in % (NaN for an empty set)."""
  if len(labels) == 0:
    return float("nan")
  return float(100.0 * np.mean(np.argmax(logits, -1) == labels))


def accuracy(model: Model, params, model_state, data: ArrayDataset, **kwargs) -> float:
  """Top-1 accuracy of the model on ``data`` (an :class:`ArrayDataset` or ``(images, labels)``)
  in % (eval-mode batch norm)."""
  data = as_dataset(data)
  return accuracy_from_logits(model_outputs(model, params, model_state, data, **kwargs)[1],
                              data.labels)


__all__ = ["accuracy", "accuracy_from_logits", "model_outputs"]
