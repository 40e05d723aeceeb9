"""CF-k and EU-k (Goel et al., 2022; docs/math.md §5.13): train only the last k blocks on
D_r, the rest frozen bit-identical (an update mask); EU-k first re-initialises those blocks."""

import jax
import jax.numpy as jnp

from unlearn_jax import seeding
from unlearn_jax.methods.common import SGD, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.models import Model
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


def last_blocks_mask(model: Model, params, k: int):
  """1 on the parameters of the last ``k`` top-level blocks (ResNet: layer4 + head for k=2)."""
  blocks = model.blocks(params)
  if not 1 <= k <= len(blocks):
    raise ValueError(f"k: {k} not in 1..{len(blocks)} (blocks of '{model.name}').")
  trainable = {name for group in blocks[-k:] for name in group}
  return {name: jax.tree.map(lambda x, on=name in trainable: jnp.full_like(x, float(on)), sub)
          for name, sub in params.items()}


def last_k_plan(name: str, hp, original, data, seed, *, reinit: bool) -> Plan:
  """``epochs`` of CE on D_r updating only the last ``hp.k`` blocks (fresh ones if ``reinit``)."""
  params = original.params
  mask = last_blocks_mask(original.model, params, hp.k)
  if reinit:
    fresh, _ = original.model.init(seeding.device_key(seed, "eu_k_init"))
    params = jax.tree.map(lambda m, p, f: jnp.where(m > 0, f, p), mask, params, fresh)
  sets = {"retain": Data(data.require("retain", name), hp.batch_size)}
  return Plan(original.model, params, original.model_state,
              optimizer(hp, sets["retain"].steps_per_epoch, mask=mask), sets,
              [Block(name, {"ce": terms.cross_entropy("retain")}, epochs=hp.epochs)],
              {"ce": 1.0}, seed)


@register("cf_k", reads=("retain",),
          description="Fine-tune only the last k blocks on D_r (the rest frozen, bit-identical).",
          defaults={**SGD, "learning_rate": 0.02, "weight_decay": 0.01, "epochs": 20,
                    "batch_size": 64, "k": 2},
          profiles={"resnet18": {"learning_rate": 0.01, "weight_decay": 5e-4, "epochs": 10,
                                 "batch_size": 256},
                    "fashion_mnist": {"learning_rate": 0.05, "weight_decay": 0.0, "epochs": 2,
                                      "batch_size": 128}})
def cf_k(hp, original, data, seed) -> Plan:
  """CF-k: the last k blocks fine-tuned."""
  return last_k_plan("cf_k", hp, original, data, seed, reinit=False)


@register("eu_k", reads=("retain",),
          description="Re-initialise the last k blocks and train them on D_r (the rest frozen).",
          defaults={**SGD, "learning_rate": 0.02, "epochs": 30, "batch_size": 64, "k": 2},
          profiles={"resnet18": {"learning_rate": 0.01, "batch_size": 256},
                    "fashion_mnist": {"epochs": 3, "batch_size": 128}})
def eu_k(hp, original, data, seed) -> Plan:
  """EU-k: the last k blocks re-initialised, then trained."""
  return last_k_plan("eu_k", hp, original, data, seed, reinit=True)
