"""A run directory read back: its recorded config and every model it kept.

``unlearn-jax run`` keeps each model it makes (the original, one Retrain model per seed, each
method's unlearned model) in ``<output_dir>/models/<name>`` with what rebuilds it, so a finished
run can be probed, shipped or attacked again without the config file or any training::

  run = load_run("runs/digits")
  model, params, model_state = run.models["spotter"]
  accuracy(model, params, model_state, run.splits.forget)
"""

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import distributed, sequence
from unlearn_jax.data.datasets import Dataset, load_dataset
from unlearn_jax.data.splits import ForgetSpec, Splits, make_splits
from unlearn_jax.models import Model

CONFIG = "config.json"
MODELS = "models"


STORAGE_KEYS = ("storage", "memory_budget_gib")  # how data is kept: no batch depends on it


def dataset_of(data: ml_collections.ConfigDict) -> Dataset:
  """The dataset of a config's ``data`` section (one recorded before ``storage`` existed is
  kept as "auto")."""
  return load_dataset(data.name, data_dir=data.data_dir, source_dir=data.source_dir,
                      manual_dir=data.manual_dir, download=data.download,
                      storage=data.get("storage", "auto"),
                      memory_budget_gib=data.get("memory_budget_gib"))


def data_key(data: ml_collections.ConfigDict) -> dict:
  """What of a config's ``data`` section a model depends on: all but :data:`STORAGE_KEYS`."""
  return {k: v for k, v in data.to_dict().items() if k not in STORAGE_KEYS}


def experiment_splits(config: ml_collections.ConfigDict, dataset: Dataset) -> Splits:
  """The splits of an experiment config: its forget set, seed and calibration fraction."""
  f = config.forget
  return make_splits(dataset, ForgetSpec(tuple(f.classes or ()), f.fraction,
                                         tuple(f.indices or ()), f.stratified),
                     seed=config.seed, calibration_fraction=config.calibration_fraction)


def model_dir(run_dir: str | pathlib.Path, name: str) -> pathlib.Path:
  """Where the model ``name`` of a run is kept."""
  return pathlib.Path(run_dir).absolute() / MODELS / name


def retrain_name(seed: int) -> str:
  """The kept name of the Retrain model of ``seed``."""
  return f"retrain-seed{seed}"


def write_config(run_dir: str | pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Records ``config`` as ``run_dir/config.json`` (process 0, atomically)."""
  if distributed.is_writer():
    path = pathlib.Path(run_dir).absolute() / CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_lib.write_atomic(path, json.dumps(config.to_dict(), indent=1, default=list))


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def read_config(run_dir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The locked config a run recorded (lists read back as the tuples they were).

  Raises:
    FileNotFoundError: ``run_dir`` has no config.json (not a run directory, or the run of a
      version before models were kept).
  """
  path = pathlib.Path(run_dir).absolute() / CONFIG
  if not path.exists():
    raise FileNotFoundError(f"run: no {CONFIG} in {path.parent}; give the output_dir of an "
                            "`unlearn-jax run` (a trial's own folder, trial<k>, for one trial).")
  config = ml_collections.ConfigDict(_tuples(ckpt_lib.read_json(
      path, "run the experiment again to rewrite it")))
  config.lock()
  return config


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished run's models and data.

  Attributes:
    config: the recorded config.
    splits: its D_f, D_r, D_t^f, D_t^r and calibration set, rebuilt from the config.
    models: name → ``(model, params, model_state)``: ``original``, ``retrain`` (its first seed,
      the table's row), ``retrain-seed<s>`` for every seed, and every method.
    meta: name → what was recorded with the model (key, seed, method hyper-parameters, seconds,
      library versions, ...).
  """

  config: ml_collections.ConfigDict
  splits: Splits
  models: dict[str, tuple[Model, Any, Any]]
  meta: dict[str, dict]

  @property
  def retrains(self) -> list[tuple[Model, Any, Any]]:
    """Every Retrain model, in ``retrain_seeds`` order."""
    return [self.models[retrain_name(s)] for s in self.config.retrain_seeds]


def load_run(run_dir: str | pathlib.Path, names: Sequence[str] | None = None) -> Run:
  """Loads the models a run kept (all, or ``names``) and rebuilds its splits.

  Raises:
    FileNotFoundError: not a run directory (no config.json; a run with trials keeps its models
      in ``trial<k>``, a sequence in ``req<r>``), or a model the run should hold is missing
      (names it).
    CorruptCheckpointError: a kept model is damaged (names the directory).
  """
  run_dir = pathlib.Path(run_dir).absolute()
  config = read_config(run_dir)
  if config.trials:
    raise FileNotFoundError(f"run: {run_dir} holds {len(config.trials)} trials; load one of "
                            f"them: {run_dir / 'trial0'} … trial{len(config.trials) - 1}.")
  if sequence.whole(config):
    last = sequence.count(config)
    raise FileNotFoundError(f"run: {run_dir} holds a sequence of {last} requests; load the "
                            f"models after one of them: {run_dir / 'req1'} … req{last}.")
  seeds = list(config.retrain_seeds)
  available = ["original", *(retrain_name(s) for s in seeds),
               *(m for m in config.methods if m != "retrain")]
  wanted = available + (["retrain"] if seeds else []) if names is None else list(names)
  unknown = set(wanted) - set(available) - {"retrain"}
  if unknown:
    raise ValueError(f"names: {sorted(unknown)} are not models of this run; it has "
                     f"{', '.join(available)}.")
  models, meta = {}, {}
  for name in wanted:
    kept = retrain_name(seeds[0]) if name == "retrain" and seeds else name
    directory = model_dir(run_dir, kept)
    if ckpt_lib.read_model_meta(directory) is None:
      raise FileNotFoundError(f"run: model {name!r} is not kept in {directory} (the run did "
                              "not finish it; `unlearn-jax run` its config again).")
    model, params, model_state, meta[name] = ckpt_lib.load_model(directory)
    models[name] = (model, params, model_state)
  return Run(config, experiment_splits(config, dataset_of(config.data)), models, meta)


__all__ = ["Run", "dataset_of", "experiment_splits", "load_run", "model_dir", "read_config",
           "retrain_name", "write_config"]
