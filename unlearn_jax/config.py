"""Experiment configs: ml_collections ``get_config(arg)`` files with ``--config.x=y`` overrides.

A config file is a Python file defining ``get_config(arg=None) -> ConfigDict`` (the big_vision /
Flax-examples convention). ``load_config("experiments/digits.py:quick", ["--config.seed=3"])``
loads it with ``arg="quick"`` and applies the overrides; the result is locked, so an unknown key
is an error naming the key. A bare name (``"digits"``, ``"digits:quick"``) is a config shipped with
the package (:data:`EXPERIMENTS_DIR`), so an installed package runs them from any directory.
"""

import ast
import importlib.util
import pathlib
import sys

import ml_collections

from unlearn_jax.evaluation import registry
from unlearn_jax.methods import METHODS

_PACKAGE = pathlib.Path(__file__).resolve().parent
# The configs shipped with an installed package (unlearn_jax/experiments), or, in a checkout,
# experiments/ beside the package (the same files: pyproject.toml maps one to the other).
EXPERIMENTS_DIR = next((d for d in (_PACKAGE / "experiments", _PACKAGE.parent / "experiments")
                        if d.is_dir()), _PACKAGE.parent / "experiments")


def _resolve(spec: str) -> tuple[pathlib.Path, str | None]:
  path, _, arg = spec.partition(":")
  candidate = pathlib.Path(path)
  if not candidate.suffix and not candidate.exists():
    candidate = EXPERIMENTS_DIR / f"{path}.py"
  if not candidate.exists():
    known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py")) if EXPERIMENTS_DIR.exists() else []
    raise FileNotFoundError(f"config: {path!r} is neither a file nor a known experiment "
                            f"({', '.join(known)}).")
  return candidate, arg or None


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_override(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  """Sets ``config.a.b = value``; raises ValueError naming an unknown key or a wrong type."""
  *parents, leaf = dotted.split(".")
  node = config
  for i, part in enumerate(parents):
    if part not in node:
      raise ValueError(f"config.{'.'.join(parents[:i + 1])}: unknown key.")
    node = node[part]
  if parents[:1] == ["hparams"] and len(parents) == 2 and isinstance(
      node, ml_collections.ConfigDict):
    with node.unlocked():  # method overrides: checked against the method's own hyper-parameters
      node[leaf] = value
    return
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    if parents[-1:] == ["options"]:  # free-form keyword arguments, e.g. model.options
      field = ".".join(parents)
      raise ValueError(f"config.{dotted}: unknown key; config.{field} is set as a whole dict: "
                       f"--config.{field}='{{\"{leaf}\": {value!r}}}'.")
    raise ValueError(f"config.{dotted}: unknown key.")
  try:
    if isinstance(node[leaf], tuple) and isinstance(value, list):
      value = tuple(value)
    node[leaf] = value
  except TypeError as e:
    raise ValueError(f"config.{dotted}: {e}") from e


def load_config(spec: str, overrides: tuple[str, ...] | list[str] = ()
                ) -> ml_collections.ConfigDict:
  """Loads ``path[:arg]`` (or a name under ``experiments/``) and applies ``--config.k=v`` items.

  The file runs with its own folder first on ``sys.path``, so it may import modules beside it
  (e.g. one that registers a method or a metric).

  Raises:
    FileNotFoundError: no such config.
    ValueError: a malformed override, an unknown key or a value of the wrong type.
  """
  path, arg = _resolve(spec)
  module_spec = importlib.util.spec_from_file_location(f"unlearn_jax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  sys.path.insert(0, str(path.parent.absolute()))  # the file may import modules beside it
  try:
    module_spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(path.parent.absolute()))
  if not hasattr(module, "get_config"):
    raise ValueError(f"config: {path} defines no get_config(arg=None).")
  config = module.get_config(arg)
  config.lock()
  return apply_overrides(config, overrides)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: tuple[str, ...] | list[str]) -> ml_collections.ConfigDict:
  """Applies ``--config.k=v`` items to ``config`` (in place) and returns it.

  Raises:
    ValueError: a malformed override, an unknown key or a value of the wrong type.
  """
  for item in overrides:
    text = item[2:] if item.startswith("--") else item
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("config."):
      raise ValueError(f"override {item!r}: expected --config.key=value.")
    apply_override(config, key[len("config."):], _parse_value(value))
  return config


def data_defaults() -> ml_collections.ConfigDict:
  """The ``data`` section: which dataset, where its files are, and how it is kept. ``storage``:
  "memory" (uint8 pixels in memory), "records" (read by index from its array_record files, for
  data larger than memory) or "auto" (in memory if it fits ``memory_budget_gib``; None: a quarter
  of the host's memory). How data is kept changes no batch, so it is not part of model keys."""
  return ml_collections.ConfigDict({"name": "digits", "data_dir": None, "source_dir": None,
                                    "manual_dir": None, "download": False, "storage": "auto",
                                    "memory_budget_gib": None})


def experiment_defaults() -> ml_collections.ConfigDict:
  """The full schema of an experiment config; experiment files start here and change fields."""
  c = ml_collections.ConfigDict()
  c.name = "experiment"
  c.seed = 0  # root of every random choice (splits, inits, data order, attacks)
  # Repeat the protocol over these seeds (mean ± std); empty: one run with ``seed``. With
  # ``trial_classes`` trial k forgets trial_classes[k] (e.g. a different class per seed).
  c.trials = ()
  c.trial_classes = ()
  c.output_dir = "runs/experiment"
  c.cache_dir = "runs/cache"  # original and Retrain models, keyed by their config
  c.compilation_cache = True  # keep XLA's compiled programs in <cache_dir>/xla (CLI runs)
  c.num_devices = 0  # 0: all devices
  c.checkpoint_every = 200  # steps between checkpoints of a running training
  c.progress = True
  c.data = data_defaults()
  c.forget = ml_collections.ConfigDict({"classes": (0,), "fraction": None, "indices": (),
                                        "stratified": True})
  c.calibration_fraction = 0.5
  # Sequential deletion requests (unlearn_jax/sequence.py; replaces ``forget``): one of
  # ``classes`` (((0,), (3,), ...), one tuple per request), ``indices`` (training indices per
  # request) or ``batches`` random batches of ``batch_fraction`` of the training set each.
  # ``teacher``: a distilling method's teacher after the first request, "previous" (the model
  # being unlearned) or "original" (θ_o). ``request`` is set by the runner (0 in a config file).
  c.sequence = ml_collections.ConfigDict({"classes": (), "indices": (), "batches": 0,
                                          "batch_fraction": None, "teacher": "previous",
                                          "request": 0})
  c.model = ml_collections.ConfigDict({"name": "small_cnn", "options": {}})
  # schedule: "step" (``decay`` = ((epoch, factor), ...)) or "cosine" (annealed per epoch).
  c.original = ml_collections.ConfigDict({
      "optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.0, "weight_decay": 0.0,
      "epochs": 15, "batch_size": 64, "decay": (), "augment": False, "schedule": "step"})
  c.retrain_seeds = (1, 2, 3)  # Retrain oracles, one per seed; () disables Retrain
  # Train them at once (vmapped) or one after another; None: vmapped except on CPU, where XLA
  # runs a vmapped convolution several times slower per model (docs/performance.md).
  c.retrain_vmap = None
  c.profile = "small"  # methods' hyper-parameter profile: small | resnet18 | fashion_mnist
  # Every registered method (Retrain first) but variants of another (spotter_plus_X); a method
  # registered before this call is included.
  c.methods = ("retrain", *(name for name, m in METHODS.items()
                            if name != "retrain" and m.variant_of is None))
  # Per-method overrides of the profile's hyper-parameters: --config.hparams.spotter.epochs=5.
  c.hparams = ml_collections.ConfigDict({name: {} for name in METHODS})
  # One entry per registered metric (evaluation/registry.py): a bool or its settings' defaults,
  # e.g. evaluation.pra.shots; mia and representation (needs Retrain) are bools.
  c.evaluation = ml_collections.ConfigDict(registry.defaults())
  return c


def population_defaults() -> ml_collections.ConfigDict:
  """The schema of a population experiment (docs/math.md §7): the challenge forgetting score
  (``protocol="challenge"``), U-LiRA with P1/P2, LiRA and KLOM (``protocol="ulira"``), or every
  method on forget sets of low / medium / high memorization (``protocol="memorization"``)."""
  c = ml_collections.ConfigDict()
  c.name = "population"
  c.protocol = "ulira"  # ulira | challenge | memorization
  c.seed = 0  # root of every random choice (pool, target set, masks, model seeds, attacks)
  c.output_dir = "runs/population"
  c.cache_dir = "runs/cache"  # finished population chunks, keyed by what made them
  c.compilation_cache = True  # keep XLA's compiled programs in <cache_dir>/xla (CLI runs)
  c.num_devices = 0  # 0: all devices (the model axis is split over them)
  c.progress = True
  c.data = data_defaults()
  c.pool_size = 0  # 0: the whole training split; else a stratified subset of it (seeded)
  # The target set T ⊆ pool: all pool examples of ``classes``, else ``size`` random ones (the
  # memorization protocol: ``size`` examples per stratum).
  c.target = ml_collections.ConfigDict({"classes": (), "size": 200})
  # Memorization protocol (§7.8): mem(i) from ``models`` originals on balanced halves (a score
  # needs ``min_models`` models with and without i); forget sets of the ``strata``.
  c.memorization = ml_collections.ConfigDict({"models": 256, "min_models": 16,
                                              "strata": ("low", "medium", "high")})
  c.klom = True  # U-LiRA: KLOM against Retrain (§7.7) when Retrain is among the methods
  c.model = ml_collections.ConfigDict({"name": "mlp", "options": {}})
  # schedule: "step" (``decay`` = ((epoch, factor), ...)) or "cosine" (annealed per epoch).
  c.original = ml_collections.ConfigDict({
      "optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.0, "weight_decay": 0.0,
      "epochs": 15, "batch_size": 64, "decay": (), "augment": False, "schedule": "step"})
  c.profile = "small"
  c.methods = ("retrain", "ft", "ga", "neggrad_plus", "salun", "scrub", "spotter", "opc")
  # Methods left out on purpose, name -> reason (recorded with the results).
  c.excluded = ml_collections.ConfigDict({})
  # Early-stop and skip rules cannot be vmapped (each model would stop at its own step): off here
  # (GA, NegGrad+, SCRUB's max steps). GA then runs a fixed 20 epochs: the profile's 100 assume
  # the stop, and without it digits MLPs diverge to NaN from about epoch 50 (measured; not tuned
  # against any attack).
  c.hparams = ml_collections.ConfigDict({name: {} for name in METHODS})
  c.hparams.ga = {"stop_forget_accuracy": None, "epochs": 20}
  c.hparams.neggrad_plus = {"stop_forget_accuracy": None}
  c.hparams.scrub = {"stop_forget_accuracy": None}
  c.population = ml_collections.ConfigDict({"models": 256, "chunk_size": 0,
                                            "memory_budget_gib": 0.0})
  c.attack = ml_collections.ConfigDict({
      "folds": 4, "variance": "auto", "min_per_example": 32, "p1_splits": 10,
      "out_from": "unlearned"})  # OUT side of U-LiRA: unlearned | originals
  return c


LATER_EVALUATIONS = ("relearn_retain", "weight_space", "tow", "uia")


def later_evaluations(c: ml_collections.ConfigDict, *, steps: int = 200,
                      eval_every: int = 40) -> ml_collections.ConfigDict:
  """Turns on relearning on D_r (``steps`` of 128 retained images, forget accuracy every
  ``eval_every``), the weight-space predictors, ToW and unlearning inversion (docs/math.md
  §6.5–6.8). The Fashion-MNIST configs' bound: 200 steps are about half an epoch of 54,000
  retained images (the reference code runs 10 epochs), about 30 s of CPU per small-CNN model."""
  for name in LATER_EVALUATIONS:
    c.evaluation[name].enabled = True
  c.evaluation.relearn_retain.steps = steps
  c.evaluation.relearn_retain.eval_every = eval_every
  return c


def resnet18_reference(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ResNet-18 with the Spotter reference code's recipe (docs/math.md §1.3) and the published
  (``resnet18``) method profile: SGD 0.1, momentum 0, wd 5e-4, 200 epochs, ×0.2 at epochs
  60/120/160, batch 128, random crop + flip; Geiping et al.'s gradient-inversion settings."""
  c.model.name = "resnet18"
  c.model.options = {"width": 1.0}
  c.original = {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.0, "weight_decay": 5e-4,
                "epochs": 200, "batch_size": 128, "decay": ((60, 0.2), (120, 0.2), (160, 0.2)),
                "augment": True, "schedule": "step"}
  c.profile = "resnet18"
  c.checkpoint_every = 1000
  c.evaluation.inversion.num_images = 8
  c.evaluation.inversion.iterations = 4800
  c.evaluation.inversion.restarts = 2
  c.evaluation.inversion.learning_rate = 0.03
  return c


def original_reference(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The Spotter reference code's recipe for its small-image originals (and Retrain; docs/math.md
  §1.3): SGD, learning rate 0.05, momentum 0.9, weight decay 5e-4, a cosine schedule
  (annealed per epoch), 5 epochs, batch 128, no augmentation; the model normalises inside, as
  every model here does. The architecture and method profile stay as ``c`` has them."""
  c.original = {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                "epochs": 5, "batch_size": 128, "decay": (), "augment": False,
                "schedule": "cosine"}
  return c
