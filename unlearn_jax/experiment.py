"""An experiment config made concrete: validated, with its data, splits, model and mesh, and
every model it needs, trained once, cached and kept in the run directory (``runs.py`` layout).
The experiment of a sequence of deletion requests (:mod:`unlearn_jax.sequence`) is that of one
request: it unlearns the request's own examples from the model the previous request left.

:class:`Experiment` gives the original (:meth:`~Experiment.original`), the Retrain oracles
(:meth:`~Experiment.retrains`) and each method's unlearned model (:meth:`~Experiment.unlearned`):
a model kept under its key is loaded, otherwise it is trained (resuming its checkpoint) and kept.
:func:`model_key` is what an unlearned model depends on; the runner adds the evaluation config.
"""

import math
import pathlib
import platform
import shutil
import time
from importlib import metadata

import jax
import ml_collections
import numpy as np

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import distributed, runs, seeding, sequence
from unlearn_jax.data.datasets import DATASET_NAMES, check_storage
from unlearn_jax.evaluation import registry
from unlearn_jax.methods import METHODS, Original, get_method
from unlearn_jax.models import MODEL_NAMES
from unlearn_jax.optim import Recipe, recipe_key
from unlearn_jax.training import sharding
from unlearn_jax.training.classifier import train_classifier, train_classifiers
from unlearn_jax.training.state import create_train_state
from unlearn_jax.unlearning import unlearn
from unlearn_jax.validation import check_numbers


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for anything that would fail later (before any work)."""
  check_numbers(config.to_dict(), "config", skip=("forget", "hparams", "model", "sequence"))
  sequence.validate(config)
  if config.data.name not in DATASET_NAMES:
    raise ValueError(f"config.data.name: unknown dataset {config.data.name!r}; known: "
                     f"{', '.join(DATASET_NAMES)}.")
  check_storage(config.data.storage, config.data.memory_budget_gib)
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

  With ``train=False`` nothing is trained: every model must be kept in the run directory. A
  sequence config is the experiment of its request ``request`` (default: its own, or the last;
  :func:`~unlearn_jax.sequence.request_config`), whose splits are those of the cumulative forget
  set; ``previous``: request r − 1's experiment, if built (its data are reused).
  """

  def __init__(self, config: ml_collections.ConfigDict, *, train: bool = True,
               request: int | None = None, previous: "Experiment | None" = None):
    validate(config)
    distributed.check_agreement({"config": config.to_dict(), "seed": config.seed})
    d = config.data
    self.dataset = previous.dataset if previous else runs.dataset_of(d)
    if sequence.given(config):
      config = sequence.request_config(config, self.dataset, request)
    self.config, self.train, self.previous = config, train, previous
    self.request = config.sequence.request if sequence.given(config) else 0
    self.splits = runs.experiment_splits(config, self.dataset)
    # What a method sees: in a sequence, D_f is the request's own examples.
    self.unlearning_splits = (sequence.unlearning_splits(config, self.dataset, self.splits)
                              if self.request else self.splits)
    self.model_spec = ckpt_lib.model_spec(
        config.model.name, num_classes=self.dataset.num_classes,
        input_shape=self.dataset.image_shape, mean=self.dataset.mean, std=self.dataset.std,
        options=config.model.options.to_dict())
    self.model = ckpt_lib.model_from_spec(self.model_spec)
    self.mesh = sharding.make_mesh(config.num_devices or None)
    self.root = pathlib.Path(config.cache_dir).absolute()
    self.out = pathlib.Path(config.output_dir).absolute()
    self.base_key = {"data": runs.data_key(d), "model": config.model.to_dict(),
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
                              **sequence.key(config),
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
    made_by = self.base_key | {"seed": seed}
    key = ckpt_lib.config_hash(made_by)
    kept = self.kept("original", key)
    if kept is None:
      def train(state, save, every):
        return train_classifier(self.model, self.dataset.train, recipe, seed=seed, state=state,
                                mesh=self.mesh, checkpoint=save, checkpoint_every=every,
                                progress=self.config.progress, desc="original")

      state, seconds = _cached_training(self.root, "original", made_by,
                                        self._abstract([seed]), train,
                                        checkpoint_every=self.config.checkpoint_every)
      kept = jax.device_get((state.params, state.model_state)), {"seconds": seconds}
      self.keep("original", key, *kept)
    (params, model_state), meta = kept
    return Original(self.model, params, model_state), meta["seconds"]

  def _retrain_base(self) -> dict:
    """What every Retrain model depends on besides its seed(s)."""
    return self.base_key | {"forget": self.config.forget.to_dict(), "split_seed": self.config.seed}

  def _retrain_key(self, seed: int) -> str:
    return ckpt_lib.config_hash(self._retrain_base() | {"seed": seed})

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

      key = self._retrain_base() | {"seeds": group}
      state, total = _cached_training(self.root, "retrain", key, self._abstract(group), train,
                                      checkpoint_every=self.config.checkpoint_every)
      params, model_state = jax.device_get((state.params, state.model_state))
      models += ([(params, model_state)] if len(group) == 1 else
                 [jax.tree.map(lambda x, k=k: x[k], (params, model_state))
                  for k in range(len(group))])
      seconds += [total / len(group)] * len(group)
    return models, seconds

  def _start(self, name: str, original: Original) -> tuple[Original, tuple | None]:
    """Where method ``name`` starts and θ_o's place as teacher: ``original`` itself, or in
    request r > 1 of a sequence the model request r − 1 left (kept, else unlearned first), with
    θ_o as teacher when ``sequence.teacher`` is "original" (None: the start is the teacher)."""
    if self.request <= 1:
      return original, None
    previous = self.previous or Experiment(self.config, train=self.train,
                                           request=self.request - 1)
    params_state, _, _ = previous.unlearned(name, original)
    teacher = ((original.params, original.model_state)
               if self.config.sequence.teacher == "original" else None)
    return Original(self.model, *params_state), teacher

  def unlearned(self, name: str, original: Original) -> tuple[tuple, float, dict]:
    """``((params, model_state), seconds, info)`` of method ``name``: its kept model, else
    unlearned from ``original`` (in a sequence's request r > 1: from request r − 1's model;
    resuming ``checkpoints/<name>/<key>``) and kept; its periodic checkpoints are then removed."""
    config, key = self.config, model_key(self, name)
    kept = self.kept(name, key)
    if kept is None:
      hparams = _hparams(config, name)
      start, teacher = self._start(name, original)
      steps = self.out / "checkpoints" / name / key
      with ckpt_lib.Checkpointer(steps) as ckpt:
        run = unlearn(get_method(name), start, self.unlearning_splits, seed=config.seed,
                      hparams=hparams, mesh=self.mesh, checkpointer=ckpt,
                      checkpoint_every=config.checkpoint_every, run_key=key,
                      progress=config.progress, teacher=teacher)
        ckpt.wait()
      kept = (run.params, run.model_state), {"seconds": run.seconds, "info": json_safe(run.info),
                                             "method": name, "hparams": hparams.to_dict()}
      self.keep(name, key, *kept)
      if distributed.is_writer():  # the kept model replaces its periodic checkpoints
        shutil.rmtree(steps, ignore_errors=True)
        for folder in (steps.parent, steps.parent.parent):
          if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (params, model_state), meta = kept
    return (params, model_state), meta["seconds"], meta.get("info", {})


def json_safe(value):
  """``value`` as plain JSON: dicts with str keys, lists, Python numbers, None for NaN/inf."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [json_safe(v) for v in value]
  if isinstance(value, np.generic | np.ndarray):
    return json_safe(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def model_key(exp: Experiment, name: str) -> str:
  """What method ``name``'s unlearned model depends on: the data, model, recipe, seed, forget set
  (in a sequence: the requests up to this one and the teacher) and its hyper-parameters (not the
  evaluation config)."""
  config = exp.config
  return ckpt_lib.config_hash({"base": exp.base_key, "seed": config.seed, "method": name,
                               "hparams": _hparams(config, name).to_dict(),
                               "forget": config.forget.to_dict(), **sequence.key(config)})


__all__ = ["Experiment", "evaluation_settings", "hardware", "json_safe", "model_key", "validate",
           "versions"]
