"""One protocol end to end: data → original and Retrain models (cached) → every method →
every metric and attack → results JSON, markdown table and plots.

Above :mod:`unlearn_jax.experiment` (the config's data and models, trained once and kept) it
evaluates every model, caches each result and writes the results. A run directory holds
(``runs.py`` reads it back):

  config.json                the config, written before any work
  models/<name>              every model the run made (original, retrain-seed<s>, each method),
                             keyed by the config that made it, saved before its metrics
  methods/<name>.json        each model's metrics, keyed by its model and the evaluation config
  checkpoints/<name>/<key>   a running method's periodic checkpoints (removed once it finishes)
  results.json, results.md, plots
  trial<k>/, req<r>/         a trial's run; a sequence's request r, run as above (its method
                             models unlearned from request r − 1's)

A rerun reuses kept models and finished results; a changed evaluation config re-evaluates the
kept models without training (``evaluate_run``); a killed run resumes each training from its last
checkpoint. Every choice derives from ``config.seed``; the config is validated (and, in a
multi-process run, checked to be the same on every process) before any work starts. Only process
0 writes results.
"""

import functools
import json
import pathlib
import time

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import config as config_lib
from unlearn_jax import distributed, report, runs, sequence, summaries
from unlearn_jax.evaluation import registry, suite
from unlearn_jax.evaluation.outputs import accuracy
from unlearn_jax.experiment import (
  Experiment,
  evaluation_settings,
  hardware,
  json_safe,
  model_key,
  validate,
  versions,
)
from unlearn_jax.methods import METHODS, Original, get_method

RESULTS = "results.json"
# Kept in each model's ``info``: the seconds its evaluation took (part of the run's wall time).
EVALUATION_SECONDS = "evaluation_seconds"


def trial_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One config per trial (seed, and forget classes if ``trial_classes``), each in its own
  ``output_dir/trial<k>``."""
  if config.trial_classes and len(config.trial_classes) != len(config.trials):
    raise ValueError(f"config.trial_classes: {len(config.trial_classes)} entries for "
                     f"{len(config.trials)} trials; give one class tuple per trial.")
  out = []
  for k, seed in enumerate(config.trials):
    trial = ml_collections.ConfigDict(config.to_dict())
    trial.trials, trial.trial_classes, trial.seed = (), (), int(seed)
    trial.output_dir = str(pathlib.Path(config.output_dir) / f"trial{k}")
    if config.trial_classes:
      trial.forget.classes = tuple(config.trial_classes[k])
    trial.lock()
    out.append(trial)
  return out


def _aggregate(config, trials: list[dict]) -> dict:
  """Per model and metric: mean ± std (population) over trials; details from the first trial."""
  models = {}
  for name, first in trials[0]["models"].items():
    metrics = {}
    for key in first["metrics"]:
      values = [t["models"][name]["metrics"].get(key) for t in trials]
      if any(v is None for v in values):
        metrics[key] = None
      elif any(isinstance(v, str) for v in values):  # a setting in words: one per trial
        metrics[key] = {"values": values}
      else:
        metrics[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                        "values": values}
    models[name] = {"metrics": metrics, "details": first["details"], "info": first["info"]}
  out = {**{k: trials[0][k] for k in ("hardware", "versions", "splits", "columns")},
         "config": config.to_dict(), "seed": list(config.trials),
         "forget_classes": [t["forget_classes"] for t in trials], "models": models,
         "noise_floor": trials[0]["noise_floor"],
         "wall_seconds": sum(t["wall_seconds"] for t in trials)}
  if "requests" in trials[0]:  # a sequence: each request's results over trials
    out["requests"] = [_aggregate(config, [t["requests"][r] for t in trials]) | {
        "request": trials[0]["requests"][r]["request"]} for r in range(len(trials[0]["requests"]))]
  return out


def hparams_used(config: dict) -> dict:
  """Model name → the hyper-parameters a run of ``config`` (a plain dict) uses: each method's
  resolved profile and overrides; the original and Retrain (trained here, not by a plan) the
  original's recipe, Retrain with its seeds."""
  out = {"original": dict(config["original"])}
  for name in config["methods"]:
    out[name] = ({**config["original"], "seeds": list(config["retrain_seeds"])}
                 if name == "retrain" else get_method(name).hparams(
                     config["profile"], config["hparams"].get(name, {})).to_dict())
  return out


def _write(results: dict, out: pathlib.Path, trials: list[dict] | None = None) -> None:
  """``out/results.json``, the table, the plots and ``summary.json`` (:mod:`unlearn_jax.
  summaries`; ``trials``: the per-trial results), from process 0 only."""
  if distributed.is_writer():
    ckpt_lib.write_atomic(out / RESULTS, json.dumps(results, indent=1))
    report.write_report(results, out)
    summaries.write_summary(summaries.summarize(results, trials=trials, hparams=json_safe(
        hparams_used(results["config"]))), out)


def run_experiment(config: ml_collections.ConfigDict, *, train: bool = True) -> dict:
  """Runs the protocol of ``config`` and writes ``output_dir/results.json`` (and table, plots).

  With ``config.trials`` the protocol runs once per trial (resumable, each in ``trial<k>``) and
  the top-level results hold mean ± std over trials. With ``config.sequence`` it runs once per
  request (each in ``req<r>``, :mod:`unlearn_jax.sequence`); the results are the last request's
  with every request's under ``requests``. With ``train=False`` every model must be kept in the
  run directory already (:func:`evaluate_run`).

  Returns:
    The results dict (config, seeds, hardware, versions, split sizes, per-model metrics).
  """
  out = pathlib.Path(config.output_dir).absolute()
  if config.trials:
    validate(config)  # e.g. trial_classes with a sequence, which trial configs would drop
    configs = trial_configs(config)
    for trial in configs:
      validate(trial)
    runs.write_config(out, config)
    trials = [run_experiment(t, train=train) for t in configs]
    results = json_safe(_aggregate(config, trials))
    _write(results, out, trials)
    return results
  if sequence.whole(config):
    experiments = [None]  # every request's config and data first: all validated before training
    for r in range(1, sequence.count(config) + 1):
      experiments.append(Experiment(config, train=train, request=r, previous=experiments[-1]))
    runs.write_config(out, config)
    results = json_safe(sequence.combine(config, [_run(exp) for exp in experiments[1:]]))
    _write(results, out)
    return results
  return _run(Experiment(config, train=train))


def _run(exp: Experiment) -> dict:
  """The protocol of one experiment (one trial, or one request of a sequence)."""
  config, out = exp.config, exp.out
  runs.write_config(out, config)
  (out / "methods").mkdir(parents=True, exist_ok=True)
  ev, seed, splits = evaluation_settings(config), config.seed, exp.splits
  original, original_seconds = exp.original()
  retrains, retrain_seconds = exp.retrains()
  theta_o = (original.params, original.model_state)

  @functools.cache
  def context() -> suite.Context:  # only when some model is evaluated (not on a cached rerun)
    return suite.prepare_context(exp.model, theta_o, splits, retrains, settings=ev, seed=seed,
                                 progress=config.progress)

  columns = report.columns(ev)
  results = {"config": config.to_dict(), "seed": seed, "hardware": hardware(),
             "versions": versions(),
             "splits": {s: len(getattr(splits, s)) for s in (*suite.SETS, "calibration")},
             "forget_classes": list(splits.forget_classes), "columns": columns, "models": {}}
  if exp.request:  # UA on the request's own examples beside UA on the cumulative forget set
    results["request"] = sequence.describe(config, exp.unlearning_splits)
    results["columns"] = (*columns[:1], summaries.REQUEST_COLUMN, *columns[1:])

  def evaluate(name, params_state, seconds, info):
    begin = time.perf_counter()
    row = suite.evaluate_model(exp.model, *params_state, context(), settings=ev, seed=seed,
                               name=name, progress=config.progress)
    row["metrics"]["seconds"] = seconds
    if exp.request:
      row["metrics"]["UA/request"] = 100.0 - accuracy(exp.model, *params_state,
                                                      exp.unlearning_splits.forget)
    return row | {"info": {**info, EVALUATION_SECONDS: time.perf_counter() - begin}}

  results["models"]["original"] = _cached(
      out, "original", _result_key(exp, "original"),
      lambda: evaluate("original", theta_o, original_seconds, {}))
  where = f"{config.name}, request {exp.request}" if exp.request else config.name
  for name in tqdm(config.methods, desc=f"{where}: methods", disable=not config.progress):
    if name == "retrain":
      compute = functools.partial(evaluate, name, retrains[0], retrain_seconds,
                                  {"seeds": list(config.retrain_seeds)})
    else:
      compute = functools.partial(_evaluate_unlearned, exp, name, original, evaluate)
    results["models"][name] = _cached(out, name, _result_key(exp, name), compute)
  results["noise_floor"] = _cached(out, "noise_floor", _result_key(exp, "noise_floor"),
                                   lambda: suite.noise_floor(context()))
  results["wall_seconds"] = _compute_seconds(results["models"], out)
  results = json_safe(results)
  _write(results, out)
  return results


def _compute_seconds(models: dict, out: pathlib.Path) -> float:
  """A run's wall time, the same whether it ran in one leg or resumed from kept models and
  results: every model's training or unlearning time (``seconds``, summed over legs), every
  evaluation's time and the noise floor's (kept with their results; 0 for a result kept by a
  version that did not record it)."""
  total = sum((row["metrics"].get("seconds") or 0.0)
              + row.get("info", {}).get(EVALUATION_SECONDS, 0.0) for row in models.values())
  floor = out / "methods" / "noise_floor.json"
  return total + (json.loads(floor.read_text()).get("seconds", 0.0) if floor.exists() else 0.0)


def _evaluate_unlearned(exp: Experiment, name: str, original: Original, evaluate) -> dict:
  params_state, seconds, info = exp.unlearned(name, original)
  return evaluate(name, params_state, seconds, info)


def evaluate_run(run_dir: str | pathlib.Path, overrides=()) -> dict:
  """Re-evaluates the models a finished run kept, training nothing, and rewrites its results.

  Args:
    run_dir: the run's ``output_dir`` (holding ``config.json`` and ``models/``).
    overrides: ``--config.evaluation.X=value`` (or ``progress``) items; the recorded config is
      otherwise unchanged, so every model is the one the run kept (each is evaluated again with
      the new settings). Metrics registered after the run was made join with their defaults,
      so ``--config.evaluation.tow.enabled=True`` adds ToW to an older run.

  Raises:
    FileNotFoundError: no recorded config, or a model the config needs is not kept (names it).
    ValueError: an override outside ``evaluation`` / ``progress`` (it would change the models).
  """
  config = runs.read_config(run_dir)
  allowed = ("config.evaluation.", "config.progress=")
  for item in overrides:
    text = item[2:] if item.startswith("--") else item
    if not text.startswith(allowed):
      raise ValueError(f"evaluate: {item!r} would change the models; only "
                       "--config.evaluation.* and --config.progress may be overridden.")
  with config.unlocked():  # metrics registered after the run was made: their defaults (off or on)
    for name, value in registry.defaults().items():
      if name not in config.evaluation:
        config.evaluation[name] = value
  config = config_lib.apply_overrides(config, overrides)
  with config.unlocked():
    config.output_dir = str(pathlib.Path(run_dir).absolute())
  return run_experiment(config, train=False)


def _result_key(exp: Experiment, name: str) -> str:
  """What ``name``'s evaluated result depends on: its model (:func:`model_key`), the forget set
  and calibration split, the Retrain seeds and the evaluation config."""
  config = exp.config
  return ckpt_lib.config_hash({"model": model_key(exp, name) if name in METHODS else name,
                               "base": exp.base_key, "seed": config.seed,
                               "forget": config.forget.to_dict(),
                               "calibration_fraction": config.calibration_fraction,
                               "retrain_seeds": list(config.retrain_seeds),
                               "evaluation": config.evaluation.to_dict(),
                               **sequence.key(config)})


def _cached(out: pathlib.Path, name: str, key: str, compute):
  """``out/methods/<name>.json``'s result when its key is ``key``, else ``compute()``, written
  there with the seconds it took (atomically, by process 0). A damaged file is recomputed."""
  path = out / "methods" / f"{name}.json"
  if path.exists():
    try:
      cached = json.loads(path.read_text())
    except json.JSONDecodeError:  # damaged (e.g. written by an older version, then killed)
      cached = {}
    if cached.get("key") == key:
      return cached["result"]
  begin = time.perf_counter()
  result = compute()
  seconds = time.perf_counter() - begin
  if distributed.is_writer():
    ckpt_lib.write_atomic(path, json.dumps(json_safe({"key": key, "result": result,
                                                      "seconds": seconds})))
  return result


__all__ = ["Experiment", "evaluate_run", "model_key", "run_experiment", "validate"]
