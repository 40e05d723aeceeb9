"""A population config made concrete (docs/math.md §7): validated before any work, with its data,
pool, target set, model and mesh, the cache keys of its populations, and what every population is
measured by (φ and correctness on the pool and the test set). The protocols themselves are in
:mod:`unlearn_jax.population_runner` (challenge, U-LiRA) and
:mod:`unlearn_jax.population_memorization` (memorization strata).
"""

import pathlib

import jax
import ml_collections
import numpy as np

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import runs, seeding
from unlearn_jax.data.datasets import DATASET_NAMES, ArrayDataset
from unlearn_jax.data.splits import MEMORIZATION_STRATA
from unlearn_jax.evaluation import challenge, lira
from unlearn_jax.methods import HParams, Original, get_method
from unlearn_jax.models import MODEL_NAMES, make_model
from unlearn_jax.optim import Recipe, recipe_key
from unlearn_jax.populations import Population, population_logits, stop_hint, unlearning_plan
from unlearn_jax.training import sharding
from unlearn_jax.training.execute import check_population

PROTOCOLS = ("challenge", "ulira", "memorization")


def recipe(c: ml_collections.ConfigDict) -> Recipe:
  """The training recipe of a config's ``original`` section (the step schedule for a config
  recorded before ``schedule`` existed)."""
  return Recipe(c.optimizer, c.learning_rate, c.momentum, c.weight_decay, c.epochs, c.batch_size,
                tuple(tuple(d) for d in c.decay), c.augment, c.get("schedule", "step"))


def hparams(config, name: str) -> HParams:
  """Method ``name``'s hyper-parameters: its ``config.profile`` with ``config.hparams.<name>``."""
  overrides = config.hparams[name].to_dict() if name in config.hparams else {}
  return get_method(name).hparams(config.profile, overrides, field=f"config.hparams.{name}")


def _validate_memorization(config: ml_collections.ConfigDict) -> None:
  mem, t = config.memorization, config.target
  if t.classes or t.size < 1:
    raise ValueError(f"config.target: the memorization protocol takes target.size examples per "
                     f"stratum and no classes; got {t.to_dict()}.")
  strata = tuple(mem.strata)
  if not strata or len(set(strata)) != len(strata) or set(strata) - set(MEMORIZATION_STRATA):
    raise ValueError(f"config.memorization.strata: {strata}; give distinct names from "
                     f"{', '.join(MEMORIZATION_STRATA)}.")
  if mem.min_models < 1:
    raise ValueError(f"config.memorization.min_models: {mem.min_models}; need ≥ 1.")
  if mem.models < 2 or mem.models % 2 or mem.models // 2 < mem.min_models:
    raise ValueError(
        f"config.memorization.models: {mem.models}; on balanced halves every example is IN for "
        f"M/2 models and OUT for M/2, and a score needs memorization.min_models = "
        f"{mem.min_models} on each side: the population is too small for any stratum. Use an "
        f"even count ≥ {2 * mem.min_models}.")
  if "retrain" not in config.methods:
    raise ValueError(f"config.methods: {tuple(config.methods)}; the memorization protocol "
                     "compares every method with Retrain: add 'retrain'.")
  if config.population.models < 2:
    raise ValueError(f"config.population.models: {config.population.models}; a spread over "
                     "models (and KLOM's histograms) needs ≥ 2.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for anything that would fail later (before any work)."""
  for field, value, allowed in (("protocol", config.protocol, PROTOCOLS),
                                ("data.name", config.data.name, DATASET_NAMES),
                                ("model.name", config.model.name, MODEL_NAMES),
                                ("attack.variance", config.attack.variance, lira.VARIANCES),
                                ("attack.out_from", config.attack.out_from,
                                 ("unlearned", "originals"))):
    if value not in allowed:
      raise ValueError(f"config.{field}: {value!r} is not allowed; allowed: "
                       f"{', '.join(allowed)}.")
  for name in config.methods:
    get_method(name, "config.methods")
    hparams(config, name)
  m = config.population.models
  if config.protocol == "ulira" and (m < 2 * config.attack.folds or m % 2):
    raise ValueError(f"config.population.models: {m}; U-LiRA needs an even count ≥ 2 × "
                     f"attack.folds = {2 * config.attack.folds}.")
  if config.protocol == "ulira" and config.klom and "retrain" in config.methods and m % 4:
    raise ValueError(f"config.population.models: {m}; KLOM splits the M/2 Retrain models that "
                     "forgot (or kept) each example into a reference half and a noise-floor half "
                     "of one size, so M must be a multiple of 4 (or set config.klom=False).")
  if config.protocol == "challenge" and m < 3:
    raise ValueError(f"config.population.models: {m}; the challenge score needs ≥ 3.")
  if config.protocol == "memorization":
    _validate_memorization(config)
  elif bool(config.target.classes) == bool(config.target.size):
    raise ValueError("config.target: give exactly one of classes (all pool examples of them) or "
                     f"size (random); got {config.target.to_dict()}.")


class Setting:
  """A validated population config with its data, pool, target set (None for the memorization
  protocol, whose targets come from the scores), model and mesh."""

  def __init__(self, config: ml_collections.ConfigDict):
    validate(config)
    self.config, seed, d = config, config.seed, config.data
    self.dataset = runs.dataset_of(d)
    train = self.dataset.train
    index = np.arange(len(train))
    if config.pool_size:
      if config.pool_size > len(train):
        raise ValueError(f"config.pool_size: {config.pool_size} > {len(train)} training examples.")
      from sklearn.model_selection import train_test_split
      index = np.sort(train_test_split(index, train_size=config.pool_size, stratify=train.labels,
                                       random_state=int(seeding.host_rng(seed, "pool")
                                                        .integers(2**31)))[0])
    self.pool_index = index  # pool example i is training example pool_index[i]
    self.pool: ArrayDataset = train.subset(index)
    n = len(self.pool)
    self.target = None
    if config.protocol == "memorization":
      strata = len(config.memorization.strata)
      if config.target.size * strata > n:
        raise ValueError(f"config.target.size: {config.target.size} examples × {strata} strata "
                         f"> pool size {n}: too few examples for the strata.")
    elif config.target.classes:
      self.target = np.isin(self.pool.labels, config.target.classes)
    else:
      if config.target.size >= n:
        raise ValueError(f"config.target.size: {config.target.size} ≥ pool size {n}.")
      self.target = np.zeros(n, bool)
      self.target[seeding.host_rng(seed, "target").choice(n, config.target.size,
                                                          replace=False)] = True
    if self.target is not None and not self.target.any():
      raise ValueError(f"config.target: selects no pool example ({config.target.to_dict()}).")
    self.model = make_model(config.model.name, num_classes=self.dataset.num_classes,
                            input_shape=self.dataset.image_shape, mean=self.dataset.mean,
                            std=self.dataset.std, **config.model.options.to_dict())
    self.mesh = sharding.make_mesh(config.num_devices or None)
    self.recipe = recipe(config.original)
    self.base_key = {"protocol": config.protocol, "data": d.name, "seed": seed,
                     "pool_size": config.pool_size, "model": config.model.to_dict(),
                     "recipe": recipe_key(config.original.to_dict()),
                     "target": config.target.to_dict(), "models": config.population.models}
    p = config.population
    self.run_kwargs = {"chunk_size": p.chunk_size or None, "mesh": self.mesh,
                       "memory_budget": int(p.memory_budget_gib * 2**30) or None,
                       "progress": config.progress}

  def cached(self, **key) -> dict:
    """run_population kwargs whose checkpoint directory is keyed by ``key`` and the setting."""
    key = self.base_key | key
    return self.run_kwargs | {"run_key": ckpt_lib.config_hash(key),
                              "checkpoint_dir": ckpt_lib.cache_dir_for(
                                  self.config.cache_dir, "population", key)}

  def dry_build(self, name: str, forget: np.ndarray, retain: np.ndarray) -> None:
    """Builds ``name``'s plan once from a fresh model: a class-only method on a random target
    set, or an early-stop rule, fails here, before any training."""
    method, hp = get_method(name), hparams(self.config, name)
    original = Original(self.model, *self.model.init(seeding.device_key(0, "dry_build")))
    plan = unlearning_plan(method, hp, original, self.pool, forget, retain,
                           forget_classes=self.forget_classes, seed=0)
    check_population([plan], name, stop_hint(method, hp))

  @property
  def forget_classes(self) -> tuple[int, ...]:
    return tuple(int(c) for c in self.config.target.classes)


_phi = jax.jit(challenge.logit_confidence)


def measure(setting: Setting, population: Population) -> dict[str, np.ndarray]:
  """φ and correctness of every model on the pool and the test set ([K, N] each)."""
  out = {}
  for split, data in (("pool", setting.pool), ("test", setting.dataset.test)):
    logits = population_logits(population, data, mesh=setting.mesh)
    labels = np.broadcast_to(data.labels, logits.shape[:2])
    out[f"phi_{split}"] = np.asarray(_phi(logits, labels))
    out[f"correct_{split}"] = np.argmax(logits, -1) == labels
  return out


def masked_accuracy(correct: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Per-model accuracy (%) over its own mask ([K, N] each) → [K]."""
  return 100.0 * np.sum(correct & mask, axis=1) / np.maximum(np.sum(mask, axis=1), 1)


def save(out: pathlib.Path, name: str, seeds, **arrays) -> None:
  """``out/populations/<name>.npz``: the seeds and ``arrays`` (φ, masks, scores)."""
  np.savez_compressed(out / "populations" / f"{name}.npz", seeds=np.asarray(seeds, np.int64),
                      **arrays)


__all__ = ["PROTOCOLS", "Setting", "hparams", "masked_accuracy", "measure", "recipe", "save",
           "validate"]
