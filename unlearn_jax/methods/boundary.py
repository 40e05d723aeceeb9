"""Boundary Unlearning (Chen et al., CVPR 2023; papers.md §5): Shrink and Expanding. D_f only.

* Boundary Shrink: x' = FGSM_ε(θ_o, x) (pixel space, rounded to 1/255); the new label is
  argmax θ_o(x') — the nearest wrong class; fine-tune with CE on (x, that label).
* Boundary Expanding: widen the head with a shadow class C, fine-tune on (x, C), then prune the
  shadow column (back to C outputs).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.batching import Stream
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.base import (
  Method,
  Original,
  Plan,
  UnlearningData,
  epoch_blocks,
  frozen_context,
  optimizer,
  phase,
  register,
)
from unlearn_jax.models import Model
from unlearn_jax.objectives import terms
from unlearn_jax.perturbations import fgsm
from unlearn_jax.training import sharding


@functools.cache
def _relabel_fn(model: Model, eps: float):
  def relabel(params, model_state, images, labels, *_):
    adv = fgsm(model, params, model_state, images, labels, eps=eps)
    return jnp.argmax(model.apply(params, model_state, adv)[1], -1)

  return jax.jit(relabel)


def nearest_wrong_labels(original: Original, forget: ArrayDataset, eps: float, *,
                         batch_size: int = 64) -> np.ndarray:
  """argmax θ_o(FGSM_ε(x)) for every forget image (Boundary Shrink's relabelling)."""
  if eps < 0:
    raise ValueError(f"boundary_shrink.eps: {eps} < 0.")
  labels = sharding.map_batches(_relabel_fn(original.model, float(eps)), forget,
                                batch_size=batch_size,
                                replicated_args=(original.params, original.model_state))
  return labels.astype(np.int32)


def _relabelled_plan(name, config, model: Model, params, model_state, original, data, labels,
                     seed, finalize=None, info=None) -> Plan:
  forget = data.require("forget", name)
  stream = Stream(ArrayDataset(forget.images, labels), config.batch_size, seed=seed,
                  name="forget")
  t = {"ce": terms.cross_entropy("forget")}
  blocks = epoch_blocks(phase(name, model, t), {"forget": stream}, "forget", range(config.epochs))
  return Plan(model, params, model_state, optimizer(config, stream.steps_per_epoch),
              tuple(blocks), frozen_context(original, data, {"ce": 1.0}, t), finalize,
              info or {})


def _build_shrink(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  forget = data.require("forget", "boundary_shrink")
  labels = nearest_wrong_labels(original, forget, config.eps)
  changed = float(np.mean(labels != forget.labels))
  return _relabelled_plan("boundary_shrink", config, original.model, original.params,
                          original.model_state, original, data, labels, seed,
                          info={"relabelled_fraction": changed})


def widened(model: Model) -> Model:
  """The same model with one extra (shadow) output."""
  return dataclasses.replace(model, module=model.module.clone(num_classes=model.num_classes + 1),
                             num_classes=model.num_classes + 1)


def _build_expand(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  forget = data.require("forget", "boundary_expanding")
  wide = widened(original.model)
  fresh, _ = wide.init(seeding.device_key(seed, "shadow_head"))
  head = original.params["head"]
  params = {**original.params, "head": {
      "kernel": jnp.concatenate([head["kernel"], fresh["head"]["kernel"][:, -1:]], axis=1),
      "bias": jnp.concatenate([head["bias"], fresh["head"]["bias"][-1:]])}}
  shadow = np.full(len(forget), original.model.num_classes, np.int32)

  def prune(p, s):
    return {**p, "head": {"kernel": p["head"]["kernel"][:, :-1], "bias": p["head"]["bias"][:-1]}}, s

  return _relabelled_plan("boundary_expanding", config, wide, params, original.model_state,
                          original, data, shadow, seed, finalize=prune)


_SMALL = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "epochs": 10,
          "batch_size": 32}
_RESNET = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "learning_rate": 1e-5,
           "epochs": 10, "batch_size": 64}

register(Method(
    "boundary_shrink", frozenset({"forget"}), _build_shrink,
    {"resnet18": {**_RESNET, "eps": 0.1}, "small": {**_SMALL, "learning_rate": 3e-4, "eps": 0.3}},
    "Fine-tune D_f toward each image's nearest wrong class (found by FGSM on θ_o)."))

register(Method(
    "boundary_expanding", frozenset({"forget"}), _build_expand,
    {"resnet18": _RESNET, "small": {**_SMALL, "learning_rate": 5e-5}},
    "Fine-tune D_f into a shadow class, then prune the shadow output."))
