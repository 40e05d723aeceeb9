"""One protocol end to end: data → original and Retrain models (cached) → every method →
every metric and attack → results JSON, markdown table and plots.

The only module that imports methods, training and evaluation together. A run directory holds
(``runs.py`` reads it back):

  config.json                the config, written before any work
  models/<name>              every model the run made (original, retrain-seed<s>, each method),
                             keyed by the config that made it, saved before its metrics
  methods/<name>.json        each model's metrics, keyed by its model and the evaluation config
  checkpoints/<name>/<key>   a running method's periodic checkpoints (removed once it finishes)
  results.json, results.md, plots

A rerun reuses kept models and finished results; a changed evaluation config re-evaluates the
kept models without training (``evaluate_run``); a killed run resumes each training from its last
checkpoint. Every choice derives from ``config.seed``; the config is validated (and, in a
multi-process run, checked to be the same on every process) before any work starts. Only process
0 writes results.
"""

import functools
import json
import math
import pathlib
import platform
import shutil
import time
from importlib import metadata

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import config as config_lib
from unlearn_jax import distributed, report, runs, seeding, summaries
from unlearn_jax.data.datasets import DATASET_NAMES
from unlearn_jax.evaluation import registry, suite
from unlearn_jax.methods import METHODS, Original, get_method
from unlearn_jax.models import MODEL_NAMES
from unlearn_jax.optim import Recipe, recipe_key
from unlearn_jax.training import sharding
from unlearn_jax.training.classifier import train_classifier, train_classifiers
from unlearn_jax.training.state import create_train_state
from unlearn_jax.unlearning import unlearn
from unlearn_jax.validation import check_numbers

RESULTS = "results.json"


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for anything that would fail later (before any work)."""
  check_numbers(config.to_dict(), "config", skip=("forget", "hparams", "model"))
  if config.data.name not in DATASET_NAMES:
    raise ValueError(f"config.data.name: unknown dataset {config.data.name!r}; known: "
                     f"{', '.join(DATASET_NAMES)}.")
  if config.model.name not in MODEL_NAMES:
    raise ValueError(f"config.model.name: unknown model {config.model.name!r}; known: "
                     f"{', '.join(MODEL_NAMES)}.")
  try:
    _recipe(config.original)
  except ValueError as e:
    raise ValueError(f"config.original.{e}") from None
  for name in config.methods:
    get_method(name, "config.methods")
  for name, overrides in config.hparams.items():
    if name not in METHODS:
      raise ValueError(f"config.hparams.{name}: not a method; known: {', '.join(sorted(METHODS))}.")
    _hparams(config, name, overrides)
  settings = evaluation_settings(config)
  needs_retrain = ["retrain"] if "retrain" in config.methods else []
  needs_retrain += [f"config.evaluation.{m.name}" for m in registry.metrics()
                    if settings[m.name].enabled and "retrain" in m.needs]
  if not config.retrain_seeds and needs_retrain:
    raise ValueError(f"config.retrain_seeds is empty (Retrain disabled) but {needs_retrain} need "
                     "Retrain; set retrain_seeds or turn them off.")
  for name, s in settings.items():  # named models that are not run are skipped
    unknown = set(getattr(s, "models", ())) - set(METHODS) - {"original"}
    if s.enabled and unknown:
      raise ValueError(f"config.evaluation.{name}.models: {sorted(unknown)} are not methods; "
                       f"known: original, {', '.join(sorted(METHODS))}.")


def evaluation_settings(config: ml_collections.ConfigDict) -> dict[str, registry.Settings]:
  """``config.evaluation`` as each registered metric's plain settings (the one conversion).

  Raises:
    ValueError: an unknown metric or setting, or a wrong type, naming the key.
  """
  return registry.resolve(config.evaluation.to_dict())


def _hparams(config: ml_collections.ConfigDict, name: str, overrides=None):
  overrides = config.hparams.get(name, {}) if overrides is None else overrides
  return get_method(name).hparams(config.profile, overrides.to_dict(),
                                  field=f"config.hparams.{name}")


def hardware() -> dict:
  """Platform, processor, CPU count, JAX backend, devices and process count, for the results."""
  devices = jax.devices()
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": __import__("os").cpu_count(), "backend": jax.default_backend(),
          "devices": [str(d) for d in devices], "process_count": jax.process_count()}


def versions() -> dict:
  """Installed versions of the stack (jax, flax, optax, orbax, ...) and of unlearn_jax."""
  names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "tensorflow-datasets")
  return {n: metadata.version(n) for n in names} | {"unlearn_jax": metadata.version("unlearn_jax")}


def _recipe(c: ml_collections.ConfigDict) -> Recipe:
  # A config recorded before ``schedule`` existed trained with the step schedule.
  return Recipe(c.optimizer, c.learning_rate, c.momentum, c.weight_decay, c.epochs, c.batch_size,
                tuple(tuple(d) for d in c.decay), c.augment, c.get("schedule", "step"))


def _cached_training(root, kind: str, key: dict, abstract, train, *, checkpoint_every: int):
  """Restores a finished model keyed by ``key``, else trains it (resuming a checkpoint)."""
  with ckpt_lib.Checkpointer(ckpt_lib.cache_dir_for(root, kind, key)) as ckpt:
    meta = ckpt.meta()
    if meta and meta.get("complete"):
      return ckpt.restore(abstract), meta["seconds"]
    state = ckpt.restore(abstract) if meta else None
    start = time.perf_counter()
    final, _ = train(state, lambda step, st: ckpt.save(step, st, {"kind": kind, "key": key,
                                                                  "complete": False}),
                     checkpoint_every)
    seconds = time.perf_counter() - start + (meta or {}).get("seconds", 0.0)
    ckpt.save(int(np.max(jax.device_get(final.step))), final,
              {"kind": kind, "key": key, "complete": True, "seconds": seconds})
    ckpt.wait()
    return final, seconds


class Experiment:
  """A validated config with its data, splits, model and mesh, and where its models are kept.

  With ``train=False`` nothing is trained: every model must be kept in the run directory.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, train: bool = True):
    validate(config)
    distributed.check_agreement({"config": config.to_dict(), "seed": config.seed})
    self.config, self.train = config, train
    d = config.data
    self.dataset = runs.dataset_of(d)
    self.splits = runs.experiment_splits(config, self.dataset)
    self.model_spec = ckpt_lib.model_spec(
        config.model.name, num_classes=self.dataset.num_classes,
        input_shape=self.dataset.image_shape, mean=self.dataset.mean, std=self.dataset.std,
        options=config.model.options.to_dict())
    self.model = ckpt_lib.model_from_spec(self.model_spec)
    self.mesh = sharding.make_mesh(config.num_devices or None)
    self.root = pathlib.Path(config.cache_dir).absolute()
    self.out = pathlib.Path(config.output_dir).absolute()
    self.base_key = {"data": d.to_dict(), "model": config.model.to_dict(),
                     "recipe": recipe_key(config.original.to_dict())}

  def kept(self, name: str, key: str):
    """``((params, model_state), meta)`` of the model ``name`` kept with ``key``, else None
    (with ``train=False``: FileNotFoundError naming it)."""
    directory = runs.model_dir(self.out, name)
    meta = ckpt_lib.read_model_meta(directory)
    if meta is None or meta.get("key") != key:
      if not self.train:
        state = "one of another config" if meta else "no finished model"
        raise FileNotFoundError(f"evaluate: {directory} holds {state}; `unlearn-jax run` the "
                                "config to train it.")
      return None
    _, params, model_state, meta = ckpt_lib.load_model(directory, key)
    return (params, model_state), meta

  def keep(self, name: str, key: str, params_state, meta: dict) -> None:
    """Saves the finished model ``name`` in the run directory with ``key`` and ``meta``."""
    config = self.config
    ckpt_lib.save_model(runs.model_dir(self.out, name), *params_state, spec=self.model_spec,
                        meta={"key": key, "name": name, "data": config.data.to_dict(),
                              "forget": config.forget.to_dict(),
                              "forget_classes": list(self.splits.forget_classes),
                              "seed": config.seed, "versions": versions(), **meta})

  def _abstract(self, seeds):
    tx = _recipe(self.config.original).make_tx(1)
    init = jax.vmap(lambda k: create_train_state(*self.model.init(k), tx))
    abstract = jax.eval_shape(init, jax.numpy.stack([seeding.device_key(s, "init")
                                                     for s in seeds]))
    return abstract if len(seeds) > 1 else jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape[1:], x.dtype), abstract)

  def original(self) -> tuple[Original, float]:
    """θ_o trained on all of D (cached by its config, kept in the run directory)."""
    seed, recipe = self.config.seed, _recipe(self.config.original)
    key = ckpt_lib.config_hash(self.base_key | {"seed": seed})
    kept = self.kept("original", key)
    if kept is None:
      def train(state, save, every):
        return train_classifier(self.model, self.dataset.train, recipe, seed=seed, state=state,
                                mesh=self.mesh, checkpoint=save, checkpoint_every=every,
                                progress=self.config.progress, desc="original")

      state, seconds = _cached_training(self.root, "original", self.base_key | {"seed": seed},
                                        self._abstract([seed]), train,
                                        checkpoint_every=self.config.checkpoint_every)
      kept = jax.device_get((state.params, state.model_state)), {"seconds": seconds}
      self.keep("original", key, *kept)
    (params, model_state), meta = kept
    return Original(self.model, params, model_state), meta["seconds"]

  def _retrain_key(self, seed: int) -> str:
    return ckpt_lib.config_hash(self.base_key | {"seed": seed,
                                                 "forget": self.config.forget.to_dict(),
                                                 "split_seed": self.config.seed})

  def retrains(self) -> tuple[list[tuple], float]:
    """Retrain oracles on D_r, one per seed of ``retrain_seeds``, trained at once (vmapped) or
    one after another (``retrain_vmap``; None: vmapped except on CPU), each kept in the run
    directory as ``retrain-seed<s>``. Returns the models and the mean seconds per model."""
    seeds = list(self.config.retrain_seeds)
    kept = {s: self.kept(runs.retrain_name(s), self._retrain_key(s)) for s in seeds}
    missing = [s for s in seeds if kept[s] is None]
    if missing:
      for seed, model, seconds in zip(missing, *self._train_retrains(missing), strict=True):
        kept[seed] = model, {"seconds": seconds}
        self.keep(runs.retrain_name(seed), self._retrain_key(seed), *kept[seed])
    models = [kept[s][0] for s in seeds]
    return models, float(np.mean([kept[s][1]["seconds"] for s in seeds])) if seeds else 0.0

  def _train_retrains(self, seeds: list[int]) -> tuple[list[tuple], list[float]]:
    """Trains (or restores from the cache) the Retrain models of ``seeds``; their seconds."""
    recipe = _recipe(self.config.original)
    retain = self.splits.retain
    vmapped = self.config.retrain_vmap
    if vmapped is None:
      vmapped = jax.default_backend() != "cpu"
    groups = [seeds] if vmapped and len(seeds) > 1 else [[s] for s in seeds]
    models, seconds = [], []
    for group in groups:
      def train(state, save, every, group=group):
        common = {"state": state, "mesh": self.mesh, "checkpoint": save,
                  "checkpoint_every": every, "progress": self.config.progress}
        if len(group) == 1:
          return train_classifier(self.model, retain, recipe, seed=group[0],
                                  desc=f"retrain (seed {group[0]})", **common)
        return train_classifiers(self.model, retain, recipe, seeds=group,
                                 desc=f"retrain×{len(group)}", **common)

      key = self.base_key | {"seeds": group, "forget": self.config.forget.to_dict(),
                             "split_seed": self.config.seed}
      state, total = _cached_training(self.root, "retrain", key, self._abstract(group), train,
                                      checkpoint_every=self.config.checkpoint_every)
      params, model_state = jax.device_get((state.params, state.model_state))
      models += ([(params, model_state)] if len(group) == 1 else
                 [jax.tree.map(lambda x, k=k: x[k], (params, model_state))
                  for k in range(len(group))])
      seconds += [total / len(group)] * len(group)
    return models, seconds

  def unlearned(self, name: str, original: Original) -> tuple[tuple, float, dict]:
    """``((params, model_state), seconds, info)`` of method ``name``: its kept model, else
    unlearned from ``original`` (resuming ``checkpoints/<name>/<key>``) and kept; its periodic
    checkpoints are then removed."""
    config, key = self.config, model_key(self, name)
    kept = self.kept(name, key)
    if kept is None:
      hparams = _hparams(config, name)
      steps = self.out / "checkpoints" / name / key
      with ckpt_lib.Checkpointer(steps) as ckpt:
        run = unlearn(get_method(name), original, self.splits, seed=config.seed,
                      hparams=hparams, mesh=self.mesh, checkpointer=ckpt,
                      checkpoint_every=config.checkpoint_every, run_key=key,
                      progress=config.progress)
        ckpt.wait()
      kept = (run.params, run.model_state), {"seconds": run.seconds, "info": _json_safe(run.info),
                                             "method": name, "hparams": hparams.to_dict()}
      self.keep(name, key, *kept)
      if distributed.is_writer():  # the kept model replaces its periodic checkpoints
        shutil.rmtree(steps, ignore_errors=True)
        for folder in (steps.parent, steps.parent.parent):
          if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (params, model_state), meta = kept
    return (params, model_state), meta["seconds"], meta.get("info", {})


def _json_safe(value):
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_json_safe(v) for v in value]
  if isinstance(value, np.generic | np.ndarray):
    return _json_safe(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


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
  return {**{k: trials[0][k] for k in ("hardware", "versions", "splits", "columns")},
          "config": config.to_dict(), "seed": list(config.trials),
          "forget_classes": [t["forget_classes"] for t in trials], "models": models,
          "noise_floor": trials[0]["noise_floor"],
          "wall_seconds": sum(t["wall_seconds"] for t in trials)}


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
    summaries.write_summary(summaries.summarize(results, trials=trials, hparams=_json_safe(
        hparams_used(results["config"]))), out)


def run_experiment(config: ml_collections.ConfigDict, *, train: bool = True) -> dict:
  """Runs the protocol of ``config`` and writes ``output_dir/results.json`` (and table, plots).

  With ``config.trials`` the protocol runs once per trial (resumable, each in ``trial<k>``) and
  the top-level results hold mean ± std over trials. With ``train=False`` every model must be kept
  in the run directory already (:func:`evaluate_run`).

  Returns:
    The results dict (config, seeds, hardware, versions, split sizes, per-model metrics).
  """
  out = pathlib.Path(config.output_dir).absolute()
  if config.trials:
    configs = trial_configs(config)
    for trial in configs:
      validate(trial)
    runs.write_config(out, config)
    trials = [run_experiment(t, train=train) for t in configs]
    results = _json_safe(_aggregate(config, trials))
    _write(results, out, trials)
    return results
  exp = Experiment(config, train=train)
  runs.write_config(out, config)
  (out / "methods").mkdir(parents=True, exist_ok=True)
  ev, seed, splits = evaluation_settings(config), config.seed, exp.splits
  start = time.perf_counter()
  original, original_seconds = exp.original()
  retrains, retrain_seconds = exp.retrains()
  theta_o = (original.params, original.model_state)

  @functools.cache
  def context() -> suite.Context:  # only when some model is evaluated (not on a cached rerun)
    return suite.prepare_context(exp.model, theta_o, splits, retrains, settings=ev, seed=seed,
                                 progress=config.progress)

  results = {"config": config.to_dict(), "seed": seed, "hardware": hardware(),
             "versions": versions(),
             "splits": {s: len(getattr(splits, s)) for s in (*suite.SETS, "calibration")},
             "forget_classes": list(splits.forget_classes), "columns": report.columns(ev),
             "models": {}}

  def evaluate(name, params_state, seconds, info):
    row = suite.evaluate_model(exp.model, *params_state, context(), settings=ev, seed=seed,
                               name=name, progress=config.progress)
    row["metrics"]["seconds"] = seconds
    return row | {"info": info}

  results["models"]["original"] = _cached(
      out, "original", _result_key(exp, "original"),
      lambda: evaluate("original", theta_o, original_seconds, {}))
  for name in tqdm(config.methods, desc=f"{config.name}: methods", disable=not config.progress):
    if name == "retrain":
      compute = functools.partial(evaluate, name, retrains[0], retrain_seconds,
                                  {"seeds": list(config.retrain_seeds)})
    else:
      compute = functools.partial(_evaluate_unlearned, exp, name, original, evaluate)
    results["models"][name] = _cached(out, name, _result_key(exp, name), compute)
  results["noise_floor"] = _cached(out, "noise_floor", _result_key(exp, "noise_floor"),
                                   lambda: suite.noise_floor(context()))
  results["wall_seconds"] = time.perf_counter() - start
  results = _json_safe(results)
  _write(results, out)
  return results


def _evaluate_unlearned(exp: Experiment, name: str, original: Original, evaluate) -> dict:
  params_state, seconds, info = exp.unlearned(name, original)
  return evaluate(name, params_state, seconds, info)


def evaluate_run(run_dir: str | pathlib.Path, overrides=()) -> dict:
  """Re-evaluates the models a finished run kept, training nothing, and rewrites its results.

  Args:
    run_dir: the run's ``output_dir`` (holding ``config.json`` and ``models/``).
    overrides: ``--config.evaluation.X=value`` (or ``progress``) items; the recorded config is
      otherwise unchanged, so every model is the one the run kept. Metrics whose settings did not
      change are read back from the run's results.

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
  config = config_lib.apply_overrides(config, overrides)
  with config.unlocked():
    config.output_dir = str(pathlib.Path(run_dir).absolute())
  return run_experiment(config, train=False)


def model_key(exp: Experiment, name: str) -> str:
  """What method ``name``'s unlearned model depends on: the data, model, recipe, seed, forget set
  and its hyper-parameters (not the evaluation config)."""
  config = exp.config
  return ckpt_lib.config_hash({"base": exp.base_key, "seed": config.seed, "method": name,
                               "hparams": _hparams(config, name).to_dict(),
                               "forget": config.forget.to_dict()})


def _result_key(exp: Experiment, name: str) -> str:
  """What ``name``'s evaluated result depends on: its model (:func:`model_key`), the forget set
  and calibration split, the Retrain seeds and the evaluation config."""
  config = exp.config
  return ckpt_lib.config_hash({"model": model_key(exp, name) if name in METHODS else name,
                               "base": exp.base_key, "seed": config.seed,
                               "forget": config.forget.to_dict(),
                               "calibration_fraction": config.calibration_fraction,
                               "retrain_seeds": list(config.retrain_seeds),
                               "evaluation": config.evaluation.to_dict()})


def _cached(out: pathlib.Path, name: str, key: str, compute):
  """``out/methods/<name>.json``'s result when its key is ``key``, else ``compute()``, written
  there (atomically, by process 0). A damaged file is recomputed."""
  path = out / "methods" / f"{name}.json"
  if path.exists():
    try:
      cached = json.loads(path.read_text())
    except json.JSONDecodeError:  # damaged (e.g. written by an older version, then killed)
      cached = {}
    if cached.get("key") == key:
      return cached["result"]
  result = compute()
  if distributed.is_writer():
    ckpt_lib.write_atomic(path, json.dumps(_json_safe({"key": key, "result": result})))
  return result


__all__ = ["Experiment", "evaluate_run", "model_key", "run_experiment", "validate"]
