"""SalUn (Fan et al., ICLR 2024; docs/math.md §5.8): RL restricted to the forget-salient
weights. Saliency m = 1[|∇_θ(−CE(θ_o; D_f))| ≥ the top-``mask_fraction`` threshold], global
over all scalar weights, in eval mode; the mask multiplies the whole update, so the other weights
stay bit-identical."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.common import SGD
from unlearn_jax.methods.registry import Original, register
from unlearn_jax.methods.rl import relabel_plan
from unlearn_jax.models import Model
from unlearn_jax.objectives.losses import cross_entropy, masked_mean
from unlearn_jax.training import sharding
from unlearn_jax.training.plan import Plan


@functools.cache
def _forget_loss_grad(model: Model):
  """Jitted ∇_θ(−mean CE) of one masked batch (a :func:`sharding.sum_batches` function)."""

  def batch_grad(params, model_state, images, labels, mask, _):
    def loss(p):
      logits = model.apply(p, model_state, images)[1]
      return -masked_mean(cross_entropy(logits, labels), where=mask)
    return jax.grad(loss)(params)

  return jax.jit(batch_grad)


def saliency_mask(original: Original, forget: ArrayDataset, fraction: float, *,
                  batch_size: int = 256):
  """SalUn's weight saliency mask, {0, 1} float32 like the parameters."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"salun.mask_fraction: {fraction} not in (0, 1].")
  total, _ = sharding.sum_batches(_forget_loss_grad(original.model), forget,
                                  batch_size=batch_size,
                                  replicated_args=(original.params, original.model_state))
  saliency = jax.tree.map(np.abs, total)
  flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(saliency)])
  k = max(1, int(round(fraction * flat.size)))
  threshold = np.partition(flat, flat.size - k)[flat.size - k]
  return jax.tree.map(lambda s: jnp.asarray(s >= threshold, jnp.float32), saliency)


@register("salun", reads=("forget", "retain"),
          description="RL restricted to the most forget-salient half of the weights (mask on "
                      "the whole update).",
          defaults={**SGD, "learning_rate": 0.02, "epochs": 10, "batch_size": 64,
                    "mask_fraction": 0.5},
          profiles={"resnet18": {"learning_rate": 0.013, "batch_size": 256},
                    "fashion_mnist": {"epochs": 2, "batch_size": 128}})
def salun(hp, original, data, seed) -> Plan:
  """RL's plan with the saliency mask on the optimiser."""
  mask = saliency_mask(original, data.require("forget", "salun"), hp.mask_fraction)
  kept = float(sum(jnp.sum(m) for m in jax.tree.leaves(mask)))
  size = sum(m.size for m in jax.tree.leaves(mask))
  plan = relabel_plan("salun", hp, original, data, seed, mask=mask)
  return dataclasses.replace(plan, info={"mask_fraction_trainable": kept / size})
