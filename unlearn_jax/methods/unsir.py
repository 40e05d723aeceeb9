"""UNSIR (Tarun et al., 2023; docs/math.md §5.11): error-maximising noise, impair, repair.

(i) For each forgotten class c learn a noise batch N_c maximising its CE:
    min_N −CE(θ_o(N), c) + ρ·mean_i ‖N_i‖², Adam; (ii) impair: CE on copies of the noise
(labelled c) mixed with ≤ ``retain_per_class`` retain images per kept class; (iii) repair: CE on
those retain images alone. Reads no forget image, only the forgotten class ids. One optimiser
runs through impair and repair.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.common import optimizer
from unlearn_jax.methods.registry import Original, register
from unlearn_jax.models import Model
from unlearn_jax.objectives import terms
from unlearn_jax.objectives.losses import cross_entropy
from unlearn_jax.training.plan import Block, Data, Plan


@functools.cache
def _noise_fn(model: Model, size: int, steps: int, learning_rate: float, reg: float):
  tx = optax.adam(learning_rate)

  def learn(params, model_state, noise, label):
    def loss(n):
      logits = model.apply(params, model_state, n)[1]
      ce = jnp.mean(cross_entropy(logits, jnp.full((size,), label)))
      return -ce + reg * jnp.mean(jnp.sum(n**2, axis=(1, 2, 3)))

    def step(carry, _):
      n, opt_state = carry
      updates, opt_state = tx.update(jax.grad(loss)(n), opt_state)
      return (optax.apply_updates(n, updates), opt_state), None

    return jax.lax.scan(step, (noise, tx.init(noise)), length=steps)[0][0]

  return jax.jit(learn)


def error_maximising_noise(original: Original, label: int, key: jax.Array, *, size: int,
                           steps: int, learning_rate: float, reg: float) -> jax.Array:
  """N ~ N(0, 1) then ``steps`` Adam steps on −CE(θ_o(N), label) + reg·mean_i ‖N_i‖²."""
  learn = _noise_fn(original.model, size, steps, float(learning_rate), float(reg))
  noise = jax.random.normal(key, (size, *original.model.input_shape))
  return learn(original.params, original.model_state, noise, jnp.int32(label))


_NOISE = {"noise_batch": 32, "noise_steps": 25, "noise_learning_rate": 0.1, "noise_reg": 0.1,
          "noise_copies": 16, "retain_per_class": 100, "impair_epochs": 2, "repair_epochs": 2}


@register("unsir", reads=("retain",),
          description="Learned error-maximising noise for the forgotten classes, impair, then "
                      "repair.",
          defaults={**_NOISE, "optimizer": "adam", "learning_rate": 3e-3, "momentum": 0.0,
                    "weight_decay": 0.0, "impair_batch_size": 32, "batch_size": 64},
          profiles={"resnet18": {"noise_copies": 80, "retain_per_class": 500, "impair_epochs": 1,
                                 "repair_epochs": 1, "learning_rate": 1e-4, "batch_size": 128},
                    "fashion_mnist": {"noise_copies": 80, "retain_per_class": 500,
                                      "impair_epochs": 1, "repair_epochs": 1,
                                      "batch_size": 128}})
def unsir(hp, original, data, seed) -> Plan:
  """Noise per forgotten class, then impair epochs (noise + retained subset) and repair epochs
  (the subset alone)."""
  if not data.forget_classes:
    raise ValueError("unsir: class unlearning only (forget.classes); a random forget set has no "
                     "class to learn noise for.")
  retain = data.require("retain", "unsir")
  rng = seeding.host_rng(seed, "unsir_retain")
  chosen = np.concatenate([
      rng.permutation(np.flatnonzero(retain.labels == c))[:hp.retain_per_class]
      for c in np.unique(retain.labels)])
  subset = retain.subset(np.sort(chosen))
  noise = [np.asarray(error_maximising_noise(
      original, c, seeding.device_key(seed, "unsir_noise", c), size=hp.noise_batch,
      steps=hp.noise_steps, learning_rate=hp.noise_learning_rate, reg=hp.noise_reg))
      for c in data.forget_classes]
  noise_images = np.concatenate([np.tile(n, (hp.noise_copies, 1, 1, 1)) for n in noise])
  noise_labels = np.repeat(np.asarray(data.forget_classes, np.int32),
                           hp.noise_copies * hp.noise_batch)
  impair = ArrayDataset(np.concatenate([noise_images, subset.images]).astype(np.float32),
                        np.concatenate([noise_labels, subset.labels]))
  sets = {"impair": Data(impair, hp.impair_batch_size), "repair": Data(subset, hp.batch_size)}
  return Plan(original.model, original.params, original.model_state, optimizer(hp), sets,
              [Block("impair", {"ce": terms.cross_entropy("impair")}, epochs=hp.impair_epochs),
               Block("repair", {"ce": terms.cross_entropy("repair")}, epochs=hp.repair_epochs)],
              {"ce": 1.0}, seed,
              info={"impair_examples": len(impair), "repair_examples": len(subset)})
