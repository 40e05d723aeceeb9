"""Boundary Unlearning (Chen et al., CVPR 2023; docs/math.md §5.6). D_f only.

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
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.common import SGD, optimizer
from unlearn_jax.methods.registry import Original, register
from unlearn_jax.models import Model
from unlearn_jax.objectives import terms
from unlearn_jax.perturbations import fgsm
from unlearn_jax.training import sharding
from unlearn_jax.training.plan import Block, Data, Plan


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


def relabelled_plan(name: str, hp, model: Model, params, model_state, forget: ArrayDataset,
                    labels: np.ndarray, seed: int, **plan) -> Plan:
  """``epochs`` of CE on the forget images with new ``labels`` (``plan``: more Plan fields)."""
  sets = {"forget": Data(forget.with_labels(labels), hp.batch_size)}
  return Plan(model, params, model_state, optimizer(hp, sets["forget"].steps_per_epoch), sets,
              [Block(name, {"ce": terms.cross_entropy("forget")}, epochs=hp.epochs)],
              {"ce": 1.0}, seed, **plan)


_SMALL = {**SGD, "epochs": 10, "batch_size": 32}
_RESNET = {"learning_rate": 1e-5, "batch_size": 64}


@register("boundary_shrink", reads=("forget",),
          description="Fine-tune D_f toward each image's nearest wrong class (found by FGSM on "
                      "θ_o).",
          defaults={**_SMALL, "learning_rate": 3e-4, "eps": 0.3},
          profiles={"resnet18": {**_RESNET, "eps": 0.1}, "fashion_mnist": {"epochs": 2}})
def boundary_shrink(hp, original, data, seed) -> Plan:
  """CE toward the nearest wrong labels, from θ_o."""
  forget = data.require("forget", "boundary_shrink")
  labels = nearest_wrong_labels(original, forget, hp.eps)
  return relabelled_plan("boundary_shrink", hp, original.model, original.params,
                         original.model_state, forget, labels, seed,
                         info={"relabelled_fraction": float(np.mean(labels != forget.labels))})


def widened(model: Model) -> Model:
  """The same model with one extra (shadow) output."""
  return dataclasses.replace(model, module=model.module.clone(num_classes=model.num_classes + 1),
                             num_classes=model.num_classes + 1)


@register("boundary_expanding", reads=("forget",),
          description="Fine-tune D_f into a shadow class, then prune the shadow output.",
          defaults={**_SMALL, "learning_rate": 5e-5},
          profiles={"resnet18": _RESNET,
                    "fashion_mnist": {"learning_rate": 3e-4, "epochs": 5}})
def boundary_expanding(hp, original, data, seed) -> Plan:
  """CE into a shadow class on a widened head; the shadow column pruned at the end."""
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

  return relabelled_plan("boundary_expanding", hp, wide, params, original.model_state, forget,
                         shadow, seed, finalize=prune)
