"""The memorization protocol (docs/math.md §7.8): every method on forget sets of low, medium and
high memorization (RUM, Zhao et al., NeurIPS 2024), compared with Retrain by population.

1. Memorization population: M = ``memorization.models`` classifiers on balanced halves of the pool
   (balanced per class too, so every model runs the same steps), own seeds; mem(i) from their
   correctness (:func:`unlearn_jax.evaluation.memorization.memorization_scores`). Its cache key
   leaves out the stratum size and the evaluation populations, so changing those reuses it.
2. Strata: ``target.size`` pool examples each
   (:func:`unlearn_jax.data.splits.memorization_strata`), a function of the scores and the seed.
3. K = ``population.models`` originals on the whole pool, own seeds, shared by the strata.
4. Per stratum T: 2K Retrain models on pool \\ T, own seeds, in two halves: A (the reference,
   Retrain's row) and B; per method, model k unlearns T from original k with its own seed. Per
   (stratum, method): forget accuracy on T (mean ± std over the K models), its gap to Retrain's
   mean, RA on pool \\ T, TA, and KLOM (§7.7) on forget (T), retain (pool \\ T) and validation
   (test) points against A. Retrain's KLOM cells hold the noise floor, KLOM(B, A) at the same K;
   the "original" row is the K originals, no unlearning.

Persisted: the scores, the masks and seeds of step 1 and each stratum's pool indices
(``populations/memorization.npz``; results.json adds the training-set indices, so the
single-model runner can forget any stratum with ``forget.indices``), and φ on the pool and the
test set of every population (``populations/<row>_<stratum>.npz``, ``original.npz``).
"""

import pathlib

import numpy as np

from unlearn_jax.data.memberships import balanced_masks
from unlearn_jax.data.splits import memorization_strata
from unlearn_jax.evaluation import klom
from unlearn_jax.evaluation.memorization import describe, memorization_scores
from unlearn_jax.population_experiment import Setting, hparams, masked_accuracy, measure, save
from unlearn_jax.populations import model_seeds, train_population, unlearn_population


def strata_of(setting: Setting, out: pathlib.Path) -> tuple[np.ndarray, dict, dict]:
  """Steps 1–2: mem(i) per pool example from the (cached) memorization population, the strata
  (stratum → sorted pool indices) and the population's record; saves
  ``populations/memorization.npz`` (scores, masks, correctness, seeds, one index array per
  stratum)."""
  c, mem = setting.config, setting.config.memorization
  labels = setting.pool.labels
  masks = balanced_masks(mem.models, len(labels), seed=c.seed, strata=labels.astype(np.int64))
  seeds = model_seeds(c.seed, mem.models, "memorization")
  population = train_population(setting.model, setting.pool, setting.recipe, seeds=seeds,
                                masks=masks, desc=f"memorization×{mem.models}",
                                **setting.cached(kind="memorization", target=None,
                                                 models=mem.models))
  correct = measure(setting, population)["correct_pool"]
  scores = memorization_scores(correct, masks, min_models=mem.min_models)
  strata = memorization_strata(scores, c.target.size, mem.strata, seed=c.seed)
  save(out, "memorization", seeds, scores=scores, masks=masks, correct=correct,
       **{f"stratum_{name}": index for name, index in strata.items()})
  return scores, strata, {"models": mem.models, "min_models": mem.min_models,
                          "seconds": population.seconds, "scores": describe(scores)}


def _row(stats: dict, forget: np.ndarray, seconds: float) -> dict:
  fa = masked_accuracy(stats["correct_pool"], forget[None, :])
  return {"forget_accuracy": {"mean": float(fa.mean()), "std": float(fa.std())},
          "RA": float(masked_accuracy(stats["correct_pool"], ~forget[None, :]).mean()),
          "TA": float(100.0 * stats["correct_test"].mean()), "seconds": seconds}


def _klom(stats: dict | None, retrained: dict, forget: np.ndarray) -> dict:
  """KLOM of a population against Retrain's reference half (its first K models) on forget,
  retain and val points; ``stats`` None: the noise floor, Retrain's second K models."""
  splits = {"forget": ("phi_pool", forget), "retain": ("phi_pool", ~forget),
            "val": ("phi_test", slice(None))}
  out = {}
  for split, (key, cols) in splits.items():
    reference, other = klom.retrain_reference(retrained[key][:, cols])
    out[split] = (klom.summarize(klom.klom(other, reference)) if stats is None
                  else klom.versus(stats[key][:, cols], reference))
  return out


def run_memorization(setting: Setting, out: pathlib.Path) -> dict:
  """Steps 1–4 of the module docstring; the body of a results dict (rows, strata, seeds)."""
  c = setting.config
  k, n, size = c.population.models, len(setting.pool), c.target.size
  placeholder = np.arange(n) < size  # a set of examples: class-only methods fail here
  for name in c.methods:
    setting.dry_build(name, placeholder, ~placeholder)
  scores, strata, record = strata_of(setting, out)
  seeds = {"originals": model_seeds(c.seed, k, "originals")}
  originals = train_population(setting.model, setting.pool, setting.recipe,
                               seeds=seeds["originals"], desc=f"originals×{k}",
                               **setting.cached(kind="originals", target=None))
  base = measure(setting, originals)
  save(out, "original", seeds["originals"], phi_pool=base["phi_pool"], phi_test=base["phi_test"])
  rows = {name: {"metrics": {}, "info": {}} for name in ("original", *c.methods)}
  described = {}
  for stratum, index in strata.items():
    forget = np.zeros(n, bool)
    forget[index] = True
    described[stratum] = {"size": len(index), "memorization": describe(scores[index]),
                          "pool_indices": index, "train_indices": setting.pool_index[index]}
    key = {"stratum": stratum, "indices": [int(i) for i in index]}
    seeds[f"retrain/{stratum}"] = model_seeds(c.seed, 2 * k, "retrained", stratum)
    ref_population = train_population(
        setting.model, setting.pool, setting.recipe, seeds=seeds[f"retrain/{stratum}"],
        masks=np.broadcast_to(~forget, (2 * k, n)), desc=f"retrain×{2 * k} [{stratum}]",
        **setting.cached(kind="retrained", **key))
    retrained = measure(setting, ref_population)
    save(out, f"retrain_{stratum}", seeds[f"retrain/{stratum}"], phi_pool=retrained["phi_pool"],
         phi_test=retrained["phi_test"], forget=forget)
    ref = {name: values[:k] for name, values in retrained.items()}  # the reference half
    populations = {"original": (base, originals), "retrain": (ref, ref_population)}
    for name in c.methods:
      if name == "retrain":
        continue
      hp = hparams(c, name)
      seeds[f"{name}/{stratum}"] = model_seeds(c.seed, k, name, stratum)
      population = unlearn_population(
          name, originals, setting.pool, forget_masks=np.broadcast_to(forget, (k, n)),
          retain_masks=np.broadcast_to(~forget, (k, n)), seeds=seeds[f"{name}/{stratum}"],
          hparams=hp, desc=f"{name}×{k} [{stratum}]",
          **setting.cached(kind=name, hparams=hp.to_dict(), **key))
      populations[name] = (measure(setting, population), population)
      save(out, f"{name}_{stratum}", seeds[f"{name}/{stratum}"],
           phi_pool=populations[name][0]["phi_pool"], phi_test=populations[name][0]["phi_test"])
    retrain_fa = _row(ref, forget, 0.0)["forget_accuracy"]["mean"]
    for name, (stats, population) in populations.items():
      metrics = _row(stats, forget, population.seconds)
      metrics["forget_gap"] = abs(metrics["forget_accuracy"]["mean"] - retrain_fa)
      metrics["klom"] = _klom(None if name == "retrain" else stats, retrained, forget)
      rows[name]["metrics"][stratum] = metrics
      rows[name]["info"][stratum] = population.info
  return {"rows": rows, "strata": described, "memorization": record, "seeds": seeds}


__all__ = ["run_memorization", "strata_of"]
