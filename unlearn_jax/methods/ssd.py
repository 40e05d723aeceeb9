"""Selective Synaptic Dampening, SSD (Foster et al., AAAI 2024; docs/math.md §5.12). No training.

Diagonal Fisher proxies I_D = mean_batches (∇_θ CE)² over the training set D = D_f ∪ D_r and I_f
over D_f; for every parameter with I_f > α·I_D: θ ← θ·min(λ·I_D / I_f, 1).
"""

import functools

import jax
import jax.numpy as jnp
import optax

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.registry import register
from unlearn_jax.models import Model
from unlearn_jax.objectives.losses import cross_entropy, masked_mean
from unlearn_jax.training import sharding
from unlearn_jax.training.plan import Plan


@functools.cache
def _squared_grad(model: Model):
  def squared_grad(params, model_state, images, labels, mask, _):
    grad = jax.grad(lambda q: masked_mean(
        cross_entropy(model.apply(q, model_state, images)[1], labels), where=mask))(params)
    return jax.tree.map(jnp.square, grad)

  return jax.jit(squared_grad)


def importances(model: Model, params, model_state, data: ArrayDataset, *,
                batch_size: int = 256):
  """I = (1/B) Σ_batches (∇_θ mean-batch CE)², eval-mode batch norm; a pytree like params.
  Each batch is split over all devices."""
  total, count = sharding.sum_batches(_squared_grad(model), data, batch_size=batch_size,
                                      replicated_args=(params, model_state))
  return jax.tree.map(lambda t: t / count, total)


def dampen(params, forget_importance, full_importance, *, alpha: float, lam: float):
  """θ·min(λ·I_D/I_f, 1) where I_f > α·I_D, else θ."""

  def one(p, i_f, i_d):
    selected = i_f > alpha * i_d
    factor = jnp.minimum(lam * i_d / jnp.where(selected, i_f, 1.0), 1.0)
    return jnp.where(selected, p * factor, p)

  return jax.tree.map(one, params, forget_importance, full_importance)


@register("ssd", reads=("forget", "retain"),
          description="Dampen the weights far more important to D_f than to D (Fisher ratio); "
                      "no training.",
          defaults={"alpha": 1.0, "lam": 0.5, "batch_size": 64},
          profiles={"resnet18": {"alpha": 10.0, "lam": 1.0, "batch_size": 256},
                    "fashion_mnist": {"alpha": 5.0, "batch_size": 128}})
def ssd(hp, original, data, seed) -> Plan:
  """θ_o dampened; an empty schedule (no step)."""
  if hp.alpha <= 0 or hp.lam <= 0:
    raise ValueError(f"ssd.alpha / ssd.lam: must be > 0, got {hp.alpha}, {hp.lam}.")
  forget, retain = data.require("forget", "ssd"), data.require("retain", "ssd")
  full = ArrayDataset.concatenate([forget, retain])
  m, p, s = original.model, original.params, original.model_state
  i_f = importances(m, p, s, forget, batch_size=hp.batch_size)
  i_d = importances(m, p, s, full, batch_size=hp.batch_size)
  new = dampen(p, i_f, i_d, alpha=hp.alpha, lam=hp.lam)
  changed = sum(int(jnp.sum(a != b)) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(p),
                                                     strict=True))
  return Plan(m, new, s, optax.identity(), {}, [], {}, seed,
              info={"dampened_parameters": changed})
