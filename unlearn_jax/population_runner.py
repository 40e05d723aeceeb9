"""Population experiments end to end (docs/math.md §7.2, §7.5): data → pool, target set T and
masks → populations (cached by what made them) → the challenge score or the unlearning MIAs →
results JSON, markdown tables, plots and the φ arrays.

* ``protocol="challenge"`` (§7.2): one original θ_o on the pool; M retrained models on
  D_r = pool \\ T, own seeds; per method M unlearned models from θ_o, own seeds; forgetting
  quality F and the final score per method. The "original" row is θ_o itself repeated M times
  (no unlearning).
* ``protocol="ulira"`` (§7.3–§7.5): M originals on balanced halves of the pool; per method each
  original unlearns its own F_m = T ∩ half_m (retain: the rest of its half); U-LiRA, P2 and P1
  per method; LiRA on the originals. The "original" row attacks the originals (no unlearning).

Like :mod:`unlearn_jax.runner`, a runner: it joins populations, methods and evaluation. Every
population is cached in ``cache_dir`` per finished chunk, so a rerun or a killed run resumes. Per
population only φ [models, examples] (float32), the masks and the seeds are persisted
(``populations/<row>.npz``).
"""

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import runs, seeding, summaries
from unlearn_jax.data.datasets import DATASET_NAMES, ArrayDataset
from unlearn_jax.data.memberships import balanced_masks
from unlearn_jax.evaluation import challenge, lira
from unlearn_jax.experiment import hardware, json_safe, versions
from unlearn_jax.methods import HParams, Original, get_method
from unlearn_jax.models import MODEL_NAMES, make_model
from unlearn_jax.optim import Recipe, recipe_key
from unlearn_jax.population_report import write_population_report
from unlearn_jax.populations import (
  Population,
  model_seeds,
  population_logits,
  stop_hint,
  train_population,
  unlearn_population,
  unlearning_plan,
)
from unlearn_jax.training import sharding
from unlearn_jax.training.execute import check_population

RESULTS = "results.json"
PROTOCOLS = ("challenge", "ulira")


def _recipe(c: ml_collections.ConfigDict) -> Recipe:
  # A config recorded before ``schedule`` existed trained with the step schedule.
  return Recipe(c.optimizer, c.learning_rate, c.momentum, c.weight_decay, c.epochs, c.batch_size,
                tuple(tuple(d) for d in c.decay), c.augment, c.get("schedule", "step"))


def _hparams(config, name: str) -> HParams:
  overrides = config.hparams[name].to_dict() if name in config.hparams else {}
  return get_method(name).hparams(config.profile, overrides, field=f"config.hparams.{name}")


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
    _hparams(config, name)
  m = config.population.models
  if config.protocol == "ulira" and (m < 2 * config.attack.folds or m % 2):
    raise ValueError(f"config.population.models: {m}; U-LiRA needs an even count ≥ 2 × "
                     f"attack.folds = {2 * config.attack.folds}.")
  if config.protocol == "challenge" and m < 3:
    raise ValueError(f"config.population.models: {m}; the challenge score needs ≥ 3.")
  if bool(config.target.classes) == bool(config.target.size):
    raise ValueError("config.target: give exactly one of classes (all pool examples of them) or "
                     f"size (random); got {config.target.to_dict()}.")


class Setting:
  """A validated population config with its data, pool, target set, model and mesh."""

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
    self.pool: ArrayDataset = train.subset(index)
    n = len(self.pool)
    if config.target.classes:
      self.target = np.isin(self.pool.labels, config.target.classes)
    else:
      if config.target.size >= n:
        raise ValueError(f"config.target.size: {config.target.size} ≥ pool size {n}.")
      self.target = np.zeros(n, bool)
      self.target[seeding.host_rng(seed, "target").choice(n, config.target.size,
                                                          replace=False)] = True
    if not self.target.any():
      raise ValueError(f"config.target: selects no pool example ({config.target.to_dict()}).")
    self.model = make_model(config.model.name, num_classes=self.dataset.num_classes,
                            input_shape=self.dataset.image_shape, mean=self.dataset.mean,
                            std=self.dataset.std, **config.model.options.to_dict())
    self.mesh = sharding.make_mesh(config.num_devices or None)
    self.recipe = _recipe(config.original)
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
    method, hp = get_method(name), _hparams(self.config, name)
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


def _masked_accuracy(correct: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Per-model accuracy (%) over its own mask ([K, N] each) → [K]."""
  return 100.0 * np.sum(correct & mask, axis=1) / np.maximum(np.sum(mask, axis=1), 1)


def _save(out: pathlib.Path, name: str, seeds, **arrays) -> None:
  np.savez_compressed(out / "populations" / f"{name}.npz", seeds=np.asarray(seeds, np.int64),
                      **arrays)


def _challenge(setting: Setting, out: pathlib.Path) -> dict:
  c, t = setting.config, setting.target
  m, retain = c.population.models, ~t
  rows, seeds = {}, {}
  forget_all, retain_all = np.broadcast_to(t, (m, len(t))), np.broadcast_to(retain, (m, len(t)))
  for name in c.methods:
    setting.dry_build(name, t, retain)
  original = train_population(setting.model, setting.pool, setting.recipe, seeds=(c.seed,),
                              desc="original", **setting.cached(kind="original"))
  seeds["retrained"] = model_seeds(c.seed, m, "retrained")
  retrained = train_population(setting.model, setting.pool, setting.recipe,
                               seeds=seeds["retrained"], masks=retain_all,
                               desc=f"retrained×{m}", **setting.cached(kind="retrained"))
  ref = measure(setting, retrained)
  _save(out, "retrained", seeds["retrained"], phi_forget=ref["phi_pool"][:, t])

  def row(stats, seconds):
    ra = _masked_accuracy(stats["correct_pool"], retain[None, :])
    ta = 100.0 * stats["correct_test"].mean(axis=1)
    score = challenge.challenge_score(
        stats["phi_pool"][:, t], ref["phi_pool"][:, t],
        retain_accuracy=(ra, _masked_accuracy(ref["correct_pool"], retain[None, :])),
        test_accuracy=(ta, 100.0 * ref["correct_test"].mean(axis=1)))
    eps = score.pop("epsilon")
    return {"metrics": {**score, "RA": float(ra.mean()), "TA": float(ta.mean()),
                        "forget_accuracy": float(_masked_accuracy(stats["correct_pool"],
                                                                  t[None, :]).mean()),
                        "seconds": seconds}, "epsilon": eps}

  stats = {k: np.repeat(v, m, axis=0) for k, v in measure(setting, original).items()}
  rows["original"] = row(stats, original.seconds)
  for name in c.methods:
    seeds[name] = model_seeds(c.seed, m, name)
    hp = _hparams(c, name)
    population = unlearn_population(name, original.member(0), setting.pool,
                                    forget_masks=forget_all, retain_masks=retain_all,
                                    seeds=seeds[name], hparams=hp,
                                    **setting.cached(kind=name, hparams=hp.to_dict()))
    stats = measure(setting, population)
    _save(out, name, seeds[name], phi_forget=stats["phi_pool"][:, t])
    rows[name] = row(stats, population.seconds) | {"info": population.info}
  return {"rows": rows, "seeds": seeds | {"original": [c.seed]}}


def _attacks(setting: Setting, stats: dict, originals_stats: dict, masks, forgot) -> dict:
  """U-LiRA, P2 and P1 of one population of unlearned models, with its utility."""
  c, t = setting.config, setting.target
  a = c.attack
  out_phi = originals_stats["phi_pool"][:, t] if a.out_from == "originals" else None
  attack = lira.u_mia(stats["phi_pool"][:, t], forgot[:, t], masks[:, t], seed=c.seed,
                      folds=a.folds, out_phi=out_phi, variance=a.variance,
                      min_per_example=a.min_per_example)
  test = setting.dataset.test
  heldout = (np.isin(test.labels, setting.forget_classes) if setting.forget_classes
             else np.ones(len(test), bool))
  p1 = lira.p1(stats["phi_pool"][:, t], forgot[:, t], stats["phi_test"][:, heldout],
               seed=c.seed, splits=a.p1_splits)
  per_example = attack.pop("per_example_accuracy")
  return {"metrics": {**attack, "p1": p1,
                      "RA": float(_masked_accuracy(stats["correct_pool"], masks & ~forgot).mean()),
                      "TA": float(100.0 * stats["correct_test"].mean()),
                      "forget_accuracy": float(_masked_accuracy(stats["correct_pool"],
                                                                forgot).mean())},
          "per_example_accuracy": per_example}


def _ulira(setting: Setting, out: pathlib.Path) -> dict:
  c, t = setting.config, setting.target
  m = c.population.models
  masks = balanced_masks(m, len(t), seed=c.seed, strata=t.astype(np.int64))
  forgot, retain = masks & t[None, :], masks & ~t[None, :]
  for name in c.methods:
    setting.dry_build(name, forgot[0], retain[0])
  seeds = {"originals": model_seeds(c.seed, m, "originals")}
  originals = train_population(setting.model, setting.pool, setting.recipe,
                               seeds=seeds["originals"], masks=masks, desc=f"originals×{m}",
                               **setting.cached(kind="originals"))
  base = measure(setting, originals)
  _save(out, "original", seeds["originals"], phi_pool=base["phi_pool"], masks=masks,
        forgot=forgot)
  start = time.perf_counter()
  rows = {"original": _attacks(setting, base, base, masks, forgot)}
  rows["original"]["metrics"]["seconds"] = originals.seconds
  rows["original"]["metrics"]["attack_seconds"] = time.perf_counter() - start
  liras = {f"{name}": lira.lira(base["phi_pool"], masks, folds=c.attack.folds, variance=v,
                                offline=offline)["metrics"]
           for name, v, offline in (("online", "per_example", False),
                                    ("online, fixed variance", "fixed", False),
                                    ("offline", "per_example", True))}
  for name in c.methods:
    seeds[name] = model_seeds(c.seed, m, name)
    hp = _hparams(c, name)
    population = unlearn_population(name, originals, setting.pool, forget_masks=forgot,
                                    retain_masks=retain, seeds=seeds[name], hparams=hp,
                                    forget_classes=setting.forget_classes,
                                    **setting.cached(kind=name, hparams=hp.to_dict()))
    stats = measure(setting, population)
    _save(out, name, seeds[name], phi_pool=stats["phi_pool"])
    start = time.perf_counter()
    rows[name] = _attacks(setting, stats, base, masks, forgot) | {"info": population.info}
    rows[name]["metrics"] |= {"seconds": population.seconds,
                              "attack_seconds": time.perf_counter() - start}
  return {"rows": rows, "lira": liras, "seeds": seeds, "checks": checks(rows)}


def checks(rows: dict) -> dict:
  """The checks of docs/math.md §7.6 for a U-LiRA run with their noise: se = sd over targets /
  √targets (shared shadow fits correlate targets, so se understates the noise a little);
  "within" is 3 se.

  Returns:
    {"noise": se of Retrain's U-LiRA accuracy, "retrain_at_chance", "original_above_chance",
    "u_lira_ge_p2": {method: bool}} (keys absent where their rows are).
  """
  def mean_se(row, attack):
    stats = row["metrics"][attack]
    if not stats.get("targets"):
      return None, None
    acc = stats["accuracy"]
    return acc["mean"], acc["std"] / np.sqrt(stats["targets"])

  out = {}
  if "retrain" in rows:
    mean, se = mean_se(rows["retrain"], "u_lira")
    out |= {"noise": se, "retrain_at_chance": bool(abs(mean - 0.5) <= 3 * se)}
  mean, se = mean_se(rows["original"], "u_lira")
  out["original_above_chance"] = bool(mean - 0.5 > 3 * se)
  out["u_lira_ge_p2"] = {}
  for name, row in rows.items():
    (u, su), (p, sp) = mean_se(row, "u_lira"), mean_se(row, "p2")
    if u is not None and p is not None:
      out["u_lira_ge_p2"][name] = bool(u - p >= -3 * np.hypot(su, sp))
  return out


def run_population_experiment(config: ml_collections.ConfigDict) -> dict:
  """Runs the population protocol of ``config``; writes ``output_dir/results.json``,
  ``results.md``, plots, ``summary.json`` and ``populations/*.npz``.

  Returns:
    The results dict (config, seeds, hardware, versions, sizes, per-row metrics).

  Raises:
    ValueError: an invalid config (before any work), e.g. a method that cannot run as a
      population (names the switch) or cannot run on the target set.
  """
  setting = Setting(config)
  out = pathlib.Path(config.output_dir).absolute()
  (out / "populations").mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  body = (_challenge if config.protocol == "challenge" else _ulira)(setting, out)
  results = {"config": config.to_dict(), "protocol": config.protocol, "seed": config.seed,
             "hardware": hardware(), "versions": versions(),
             "sizes": {"pool": len(setting.pool), "target": int(setting.target.sum()),
                       "test": len(setting.dataset.test), "models": config.population.models},
             "excluded": config.excluded.to_dict(), **body,
             "wall_seconds": time.perf_counter() - start}
  results = json_safe(results)
  ckpt_lib.write_atomic(out / RESULTS, json.dumps(results, indent=1))
  write_population_report(results, out)
  used = {"original": config.original.to_dict()} | {n: _hparams(config, n).to_dict()
                                                    for n in config.methods}
  summaries.write_summary(summaries.summarize(results, hparams=json_safe(used)), out)
  return results


__all__ = ["Setting", "checks", "measure", "run_population_experiment", "validate"]
