"""Fine-tuning baselines: Retrain, FT, GA, NegGrad+, RL, ℓ1-sparse, SalUn, CF-k, EU-k
(papers.md §5). Each is a choice of terms, streams and optimiser over the same plan machinery."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.batching import Stream
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.base import (
  Method,
  Original,
  Phase,
  Plan,
  UnlearningData,
  epoch_blocks,
  forget_accuracy_at_most,
  frozen_context,
  optimizer,
  phase,
  register,
)
from unlearn_jax.models import Model
from unlearn_jax.objectives import terms
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective
from unlearn_jax.objectives.losses import cross_entropy, masked_mean
from unlearn_jax.optim import Recipe
from unlearn_jax.training import sharding

SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}


def classifier_plan(model: Model, data: ArrayDataset, recipe: Recipe, seed: int) -> Plan:
  """Training from scratch on ``data`` (the original model, or Retrain on D_r): init, data
  order and augmentation are functions of ``seed``."""
  params, model_state = model.init(seeding.device_key(seed, "init"))
  stream = Stream(data, recipe.batch_size, seed=seed, name="train")
  ph = Phase("train", classifier_objective(model, augment=recipe.augment))
  blocks = epoch_blocks(ph, {"train": stream}, "train", range(recipe.epochs))
  return Plan(model, params, model_state, recipe.make_tx(len(data)), tuple(blocks),
              {"weights": {k: jnp.float32(v) for k, v in WEIGHTS.items()}})


def _recipe(config: ml_collections.ConfigDict) -> Recipe:
  return Recipe(config.optimizer, config.learning_rate, config.momentum, config.weight_decay,
                config.epochs, config.batch_size, tuple(tuple(d) for d in config.decay),
                config.augment)


def _build_retrain(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  return classifier_plan(original.model, data.require("retain", "retrain"), _recipe(config), seed)


register(Method(
    "retrain", frozenset({"retain"}), _build_retrain,
    {"resnet18": {**SGD, "learning_rate": 0.1, "momentum": 0.0, "epochs": 200,
                  "batch_size": 128, "decay": ((60, 0.2), (120, 0.2), (160, 0.2)),
                  "augment": True},
     "small": {"optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.0,
               "weight_decay": 0.0, "epochs": 15, "batch_size": 64, "decay": (),
               "augment": False}},
    "Retrain from scratch on D_r with the original recipe (the gold standard)."))


def _single_stream(name: str, set_name: str, term_fn, reads: frozenset, description: str,
                   defaults: dict) -> Method:
  """A method that minimises one term on one data set, starting from θ_o; an optional
  ``stop_forget_accuracy`` (methods reading D_f) ends it once D_f accuracy is that low."""

  def build(config, original: Original, data: UnlearningData, seed: int) -> Plan:
    data_set = data.require(set_name, name)
    stream = Stream(data_set, config.batch_size, seed=seed, name=set_name)
    term = {name: term_fn(set_name)}
    blocks = epoch_blocks(phase(name, original.model, term), {set_name: stream}, set_name,
                          range(config.epochs))
    stop = forget_accuracy_at_most(original.model, data_set, config.get("stop_forget_accuracy"))
    return Plan(original.model, original.params, original.model_state,
                optimizer(config, stream.steps_per_epoch), tuple(blocks),
                frozen_context(original, data, {name: 1.0}, term), stop=stop)

  return register(Method(name, reads, build, defaults, description))


_single_stream(
    "ft", "retain", terms.cross_entropy, frozenset({"retain"}),
    "Fine-tune on D_r with CE from θ_o (catastrophic forgetting).",
    {"resnet18": {**SGD, "learning_rate": 0.01, "epochs": 10, "batch_size": 256},
     "small": {"optimizer": "adam", "learning_rate": 3e-3, "momentum": 0.0, "weight_decay": 0.0,
               "epochs": 10, "batch_size": 64}})

_single_stream(
    "ga", "forget", terms.negated_cross_entropy, frozenset({"forget"}),
    "Gradient ascent on the forget set's CE (optionally until D_f accuracy ≤ a target).",
    {"resnet18": {**SGD, "learning_rate": 1e-4, "epochs": 5, "batch_size": 256,
                  "stop_forget_accuracy": None},
     "small": {**SGD, "learning_rate": 1e-4, "epochs": 100, "batch_size": 16,
               "stop_forget_accuracy": 5.0}})


def _build_neggrad_plus(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  streams = {"retain": Stream(data.require("retain", "neggrad_plus"), config.batch_size,
                              seed=seed, name="retain"),
             "forget": Stream(data.require("forget", "neggrad_plus"), config.batch_size,
                              seed=seed, name="forget")}
  t = {"ce": terms.cross_entropy("retain"), "neg_ce": terms.negated_cross_entropy("forget")}
  weights = {"ce": config.beta, "neg_ce": 1.0 - config.beta}
  blocks = epoch_blocks(phase("neggrad_plus", original.model, t), streams, "retain",
                        range(config.epochs))
  stop = forget_accuracy_at_most(original.model, streams["forget"].data,
                                 config.stop_forget_accuracy)
  return Plan(original.model, original.params, original.model_state,
              optimizer(config, streams["retain"].steps_per_epoch), tuple(blocks),
              frozen_context(original, data, weights, t), stop=stop)


register(Method(
    "neggrad_plus", frozenset({"forget", "retain"}), _build_neggrad_plus,
    {"resnet18": {**SGD, "learning_rate": 0.01, "epochs": 10, "batch_size": 256, "beta": 0.95,
                  "stop_forget_accuracy": None},
     "small": {**SGD, "learning_rate": 0.005, "epochs": 10, "batch_size": 64, "beta": 0.99,
               "stop_forget_accuracy": 5.0}},
    "Minimise β·CE(D_r) − (1−β)·CE(D_f) on paired batches (forget cycled); optional early stop "
    "once D_f accuracy ≤ stop_forget_accuracy."))


def _relabel_plan(name: str, config, original: Original, data: UnlearningData, seed: int, *,
                  mask=None) -> Plan:
  """RL as in SalUn's code: each epoch one pass over D_f with fresh random labels, then one pass
  over D_r with true labels, one optimiser throughout."""
  forget = Stream(data.require("forget", name), config.batch_size, seed=seed, name="forget")
  retain = Stream(data.require("retain", name), config.batch_size, seed=seed, name="retain")
  rl_terms = {"rl": terms.random_label_cross_entropy("forget")}
  ce_terms = {"ce": terms.cross_entropy("retain")}
  rl_phase = phase("random_labels", original.model, rl_terms)
  ce_phase = phase("retain", original.model, ce_terms)
  blocks = []
  for e in range(config.epochs):
    blocks += epoch_blocks(rl_phase, {"forget": forget}, "forget", [e])
    blocks += epoch_blocks(ce_phase, {"retain": retain}, "retain", [e])
  steps_per_epoch = forget.steps_per_epoch + retain.steps_per_epoch
  all_terms = {**rl_terms, **ce_terms}
  return Plan(original.model, original.params, original.model_state,
              optimizer(config, steps_per_epoch, mask=mask), tuple(blocks),
              frozen_context(original, data, {"rl": 1.0, "ce": 1.0}, all_terms))


register(Method(
    "rl", frozenset({"forget", "retain"}),
    lambda c, o, d, s: _relabel_plan("rl", c, o, d, s),
    {"resnet18": {**SGD, "learning_rate": 0.01, "epochs": 10, "batch_size": 256},
     "small": {**SGD, "learning_rate": 0.02, "epochs": 10, "batch_size": 64}},
    "Random labels on D_f, then true labels on D_r, each epoch."))


def _build_l1_sparse(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  stream = Stream(data.require("retain", "l1_sparse"), config.batch_size, seed=seed,
                  name="retain")
  t = {"ce": terms.cross_entropy("retain"), "l1": terms.l1_penalty(decay="linear")}
  blocks = epoch_blocks(phase("l1_sparse", original.model, t), {"retain": stream}, "retain",
                        range(config.epochs))
  return Plan(original.model, original.params, original.model_state,
              optimizer(config, stream.steps_per_epoch), tuple(blocks),
              frozen_context(original, data, {"ce": 1.0, "l1": config.alpha}, t))


register(Method(
    "l1_sparse", frozenset({"retain"}), _build_l1_sparse,
    {"resnet18": {**SGD, "learning_rate": 0.01, "epochs": 10, "batch_size": 256, "alpha": 5e-4},
     "small": {**SGD, "learning_rate": 0.05, "epochs": 40, "batch_size": 64, "alpha": 1e-4}},
    "FT on D_r + γ_t‖θ‖₁, γ_t = α(1 − t/T)."))


@functools.cache
def _forget_loss_grad(model: Model):
  """Jitted ∇_θ(−mean CE) of one masked batch (:func:`~unlearn_jax.training.sharding.sum_batches`
  arguments), eval-mode batch norm."""

  def batch_grad(params, model_state, images, labels, mask, _):
    def loss(p):
      logits = model.apply(p, model_state, images)[1]
      return -masked_mean(cross_entropy(logits, labels), where=mask)
    return jax.grad(loss)(params)

  return jax.jit(batch_grad)


def saliency_mask(original: Original, forget: ArrayDataset, fraction: float, *,
                  batch_size: int = 256):
  """SalUn's weight saliency: m = 1[|Σ_batches ∇_θ(−CE(D_f))| ≥ top-``fraction`` threshold].

  Gradients are taken in eval mode; the threshold is global over all scalar weights.
  """
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


def _build_salun(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  mask = saliency_mask(original, data.require("forget", "salun"), config.mask_fraction)
  plan = _relabel_plan("salun", config, original, data, seed, mask=mask)
  kept = float(sum(jnp.sum(m) for m in jax.tree.leaves(mask)))
  size = sum(m.size for m in jax.tree.leaves(mask))
  return dataclasses.replace(plan, info={"mask_fraction_trainable": kept / size})


register(Method(
    "salun", frozenset({"forget", "retain"}), _build_salun,
    {"resnet18": {**SGD, "learning_rate": 0.013, "epochs": 10, "batch_size": 256,
                  "mask_fraction": 0.5},
     "small": {**SGD, "learning_rate": 0.02, "epochs": 10, "batch_size": 64,
               "mask_fraction": 0.5}},
    "RL restricted to the most forget-salient half of the weights (mask on the whole update)."))


def last_blocks_mask(model: Model, params, k: int):
  """1 on the parameters of the last ``k`` top-level blocks (ResNet: layer4 + head for k=2)."""
  blocks = model.blocks(params)
  if not 1 <= k <= len(blocks):
    raise ValueError(f"k: {k} not in 1..{len(blocks)} (blocks of '{model.name}').")
  trainable = {name for group in blocks[-k:] for name in group}
  return {name: jax.tree.map(lambda x, on=name in trainable: jnp.full_like(x, float(on)), sub)
          for name, sub in params.items()}


def _build_last_k(name: str, reinit: bool):
  def build(config, original: Original, data: UnlearningData, seed: int) -> Plan:
    model, params = original.model, original.params
    mask = last_blocks_mask(model, params, config.k)
    if reinit:
      fresh, _ = model.init(seeding.device_key(seed, "eu_k_init"))
      params = jax.tree.map(lambda m, p, f: jnp.where(m > 0, f, p), mask, params, fresh)
    stream = Stream(data.require("retain", name), config.batch_size, seed=seed, name="retain")
    t = {"ce": terms.cross_entropy("retain")}
    blocks = epoch_blocks(phase(name, model, t), {"retain": stream}, "retain",
                          range(config.epochs))
    return Plan(model, params, original.model_state,
                optimizer(config, stream.steps_per_epoch, mask=mask), tuple(blocks),
                frozen_context(original, data, {"ce": 1.0}, t))

  return build


register(Method(
    "cf_k", frozenset({"retain"}), _build_last_k("cf_k", reinit=False),
    {"resnet18": {**SGD, "learning_rate": 0.01, "epochs": 10, "batch_size": 256, "k": 2},
     "small": {**SGD, "learning_rate": 0.02, "weight_decay": 0.01, "epochs": 20,
               "batch_size": 64, "k": 2}},
    "Fine-tune only the last k blocks on D_r (the rest frozen, bit-identical)."))

register(Method(
    "eu_k", frozenset({"retain"}), _build_last_k("eu_k", reinit=True),
    {"resnet18": {**SGD, "learning_rate": 0.01, "epochs": 30, "batch_size": 256, "k": 2},
     "small": {**SGD, "learning_rate": 0.02, "epochs": 30, "batch_size": 64, "k": 2}},
    "Re-initialise the last k blocks and train them on D_r (the rest frozen)."))
