"""Population experiments end to end (docs/math.md §7.2, §7.5): data → pool, target set T and
masks → populations (cached by what made them) → the challenge score or the unlearning MIAs →
results JSON, markdown tables, plots and the φ arrays.

* ``protocol="challenge"`` (§7.2): one original θ_o on the pool; M retrained models on
  D_r = pool \\ T, own seeds; per method M unlearned models from θ_o, own seeds; forgetting
  quality F and the final score per method. The "original" row is θ_o itself repeated M times
  (no unlearning).
* ``protocol="ulira"`` (§7.3–§7.5): M originals on balanced halves of the pool; per method each
  original unlearns its own F_m = T ∩ half_m (retain: the rest of its half); U-LiRA, P2 and P1
  per method; LiRA on the originals; KLOM against Retrain (§7.7). The "original" row attacks
  the originals (no unlearning).
* ``protocol="memorization"`` (§7.8): every method on forget sets of low / medium / high
  memorization (:mod:`unlearn_jax.population_memorization`).

The setting (validation, pool, target set, cache keys, measurements) is
:mod:`unlearn_jax.population_experiment`. Like :mod:`unlearn_jax.runner`, a runner: it joins
populations, methods and evaluation. Every population is cached in ``cache_dir`` per finished
chunk, so a rerun or a killed run resumes. Per population only φ [models, examples] (float32), the
masks and the seeds are persisted (``populations/<row>.npz``).
"""

import json
import pathlib
import time

import ml_collections
import numpy as np

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import summaries
from unlearn_jax.data.memberships import balanced_masks
from unlearn_jax.evaluation import challenge, klom, lira
from unlearn_jax.experiment import hardware, json_safe, versions
from unlearn_jax.population_experiment import (
  Setting,
  hparams,
  masked_accuracy,
  measure,
  save,
  validate,
)
from unlearn_jax.population_memorization import run_memorization
from unlearn_jax.population_report import write_population_report
from unlearn_jax.populations import model_seeds, train_population, unlearn_population

RESULTS = "results.json"


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
  save(out, "retrained", seeds["retrained"], phi_forget=ref["phi_pool"][:, t])

  def row(stats, seconds):
    ra = masked_accuracy(stats["correct_pool"], retain[None, :])
    ta = 100.0 * stats["correct_test"].mean(axis=1)
    score = challenge.challenge_score(
        stats["phi_pool"][:, t], ref["phi_pool"][:, t],
        retain_accuracy=(ra, masked_accuracy(ref["correct_pool"], retain[None, :])),
        test_accuracy=(ta, 100.0 * ref["correct_test"].mean(axis=1)))
    eps = score.pop("epsilon")
    return {"metrics": {**score, "RA": float(ra.mean()), "TA": float(ta.mean()),
                        "forget_accuracy": float(masked_accuracy(stats["correct_pool"],
                                                                  t[None, :]).mean()),
                        "seconds": seconds}, "epsilon": eps}

  stats = {k: np.repeat(v, m, axis=0) for k, v in measure(setting, original).items()}
  rows["original"] = row(stats, original.seconds)
  for name in c.methods:
    seeds[name] = model_seeds(c.seed, m, name)
    hp = hparams(c, name)
    population = unlearn_population(name, original.member(0), setting.pool,
                                    forget_masks=forget_all, retain_masks=retain_all,
                                    seeds=seeds[name], hparams=hp,
                                    **setting.cached(kind=name, hparams=hp.to_dict()))
    stats = measure(setting, population)
    save(out, name, seeds[name], phi_forget=stats["phi_pool"][:, t])
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
                      "RA": float(masked_accuracy(stats["correct_pool"], masks & ~forgot).mean()),
                      "TA": float(100.0 * stats["correct_test"].mean()),
                      "forget_accuracy": float(masked_accuracy(stats["correct_pool"],
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
  save(out, "original", seeds["originals"], phi_pool=base["phi_pool"], masks=masks,
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
  phis = {"original": base}
  for name in c.methods:
    seeds[name] = model_seeds(c.seed, m, name)
    hp = hparams(c, name)
    population = unlearn_population(name, originals, setting.pool, forget_masks=forgot,
                                    retain_masks=retain, seeds=seeds[name], hparams=hp,
                                    forget_classes=setting.forget_classes,
                                    **setting.cached(kind=name, hparams=hp.to_dict()))
    stats = measure(setting, population)
    save(out, name, seeds[name], phi_pool=stats["phi_pool"])
    start = time.perf_counter()
    rows[name] = _attacks(setting, stats, base, masks, forgot) | {"info": population.info}
    rows[name]["metrics"] |= {"seconds": population.seconds,
                              "attack_seconds": time.perf_counter() - start}
    phis[name] = stats
  if c.klom and "retrain" in phis:
    for name, row in rows.items():
      row["metrics"]["klom"] = _klom(setting, phis[name], phis["retrain"], forgot, retain,
                                     floor=name == "retrain")
  return {"rows": rows, "lira": liras, "seeds": seeds, "checks": checks(rows)}


def _klom(setting: Setting, stats: dict, ref: dict, forgot: np.ndarray, retain: np.ndarray, *,
          floor: bool) -> dict:
  """KLOM (docs/math.md §7.7) of a U-LiRA population against Retrain's, per split: forget =
  examples of T over the M/2 models that forgot each, retain = the other pool examples over the
  M/2 models that kept each, val = the test set over all M. Of those models, Retrain's first half
  is the reference and the method's same models (same halves and forget sets) are compared with
  it; for Retrain itself (``floor``), its second half: the noise floor at the same size."""
  t = setting.target
  splits = {"forget": ("phi_pool", t, forgot), "retain": ("phi_pool", ~t, retain),
            "val": ("phi_test", slice(None), None)}
  out = {}
  for split, (key, columns, mask) in splits.items():
    mask = None if mask is None else mask[:, columns]
    field = f"{split} models"
    reference, other = klom.retrain_reference(ref[key][:, columns], mask, field=field)
    out[split] = (klom.summarize(klom.klom(other, reference)) if floor else
                  klom.versus(stats[key][:, columns], reference, mask, field=field))
  return out


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
  protocol = {"challenge": _challenge, "ulira": _ulira, "memorization": run_memorization}
  body = protocol[config.protocol](setting, out)
  target = (config.target.size if setting.target is None  # per stratum
            else int(setting.target.sum()))
  results = {"config": config.to_dict(), "protocol": config.protocol, "seed": config.seed,
             "hardware": hardware(), "versions": versions(),
             "sizes": {"pool": len(setting.pool), "target": target,
                       "test": len(setting.dataset.test), "models": config.population.models},
             "excluded": config.excluded.to_dict(), **body,
             "wall_seconds": time.perf_counter() - start}
  results = json_safe(results)
  ckpt_lib.write_atomic(out / RESULTS, json.dumps(results, indent=1))
  write_population_report(results, out)
  used = {"original": config.original.to_dict()} | {n: hparams(config, n).to_dict()
                                                    for n in config.methods}
  summaries.write_summary(summaries.summarize(results, hparams=json_safe(used)), out)
  return results


__all__ = ["Setting", "checks", "measure", "run_population_experiment", "validate"]
