"""Reliability (issue 20): numbers checked before any work, array inputs checked at the API,
damaged files and checkpoints named with their fix, and messages that say what to do."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax import checkpoint as ckpt_lib
from unlearn_jax import cli, experiment, report, runner
from unlearn_jax.config import apply_override, load_config
from unlearn_jax.data.datasets import ArrayDataset, Dataset
from unlearn_jax.data.splits import ForgetSpec
from unlearn_jax.methods import METHODS, UnlearningData
from unlearn_jax.optim import Recipe
from unlearn_jax.training.classifier import train_classifier
from unlearn_jax.unlearning import unlearn


@pytest.mark.parametrize("field, value, allowed", [
    ("original.epochs", 0, "int ≥ 1"),
    ("original.epochs", -1, "int ≥ 1"),
    ("original.learning_rate", -0.001, "finite number > 0"),
    ("original.learning_rate", 1e999, "finite number > 0"),
    ("original.batch_size", 0, "int ≥ 1"),
    ("original.momentum", -0.5, "finite number ≥ 0"),
    ("original.weight_decay", float("nan"), "finite number ≥ 0"),
    ("original.optimizer", "sgdd", "one of sgd, adam, adamw"),
    ("checkpoint_every", -1, "int ≥ 0"),
    ("num_devices", -2, "int ≥ 0"),
    ("calibration_fraction", 1.0, "(0.0, 1.0)"),
    ("retrain_seeds", ("1",), "an int"),
    ("trials", (0.5,), "an int"),
    ("evaluation.pra.shots", (0,), "int ≥ 1"),
    ("evaluation.pra.num_draws", 0, "int ≥ 1"),
    ("evaluation.pra.curve_shots", 0, "int ≥ 1"),
    ("evaluation.relearn.shots", 0, "int ≥ 1"),
    ("evaluation.relearn.threshold", 101.0, "[0.0, 100.0]"),
    ("evaluation.relearn.max_steps", -1, "int ≥ 0"),
    ("evaluation.inversion.num_images", 0, "int ≥ 1"),
    ("evaluation.inversion.iterations", 0, "int ≥ 1"),
    ("evaluation.inversion.restarts", 0, "int ≥ 1"),
    ("evaluation.inversion.learning_rate", 0.0, "finite number > 0"),
    ("evaluation.relearn_retain.optimizer", "rmsprop", "one of sgd, adam, adamw"),
    ("evaluation.relearn_retain.schedule", "step", "constant, cosine"),
    ("evaluation.weight_space.points", 4, "odd int ≥ 3"),
    ("evaluation.uia.invert", ("gaa",), "not methods"),
    ("hparams.spotter.epochs", -3, "int ≥ 0"),
    ("hparams.ft.learning_rate", -0.05, "finite number > 0"),
    ("hparams.ga.batch_size", 0, "int ≥ 1"),
    ("hparams.unsir.impair_epochs", -1, "int ≥ 0"),
    ("hparams.unsir.noise_batch", 0, "int ≥ 1"),
    ("hparams.unsir.noise_steps", -1, "int ≥ 0"),
    ("hparams.scrub.msteps", -1, "int ≥ 0"),
    ("hparams.scrub.temperature", 0.0, "finite number > 0"),
    ("hparams.salun.mask_fraction", 1.5, "(0.0, 1.0]"),
    ("hparams.ga.stop_forget_accuracy", 150.0, "[0.0, 100.0]"),
    ("hparams.spotter.perturbation", {"eps": -0.1}, "finite number ≥ 0"),
    ("hparams.opc.lam", float("inf"), "finite number"),
])
def test_every_numeric_field_is_checked_before_any_work(field, value, allowed):
  config = load_config("digits")
  apply_override(config, field, value)
  path = f"config.{field}" + (".eps" if isinstance(value, dict) else "")
  with pytest.raises(ValueError, match=r"^" + path.replace(".", r"\.") + ":") as info:
    runner.validate(config)
  assert allowed in str(info.value)


def test_every_registered_methods_profiles_pass_the_checks():
  from unlearn_jax.methods.registry import known_profiles
  for method in METHODS.values():
    for profile in known_profiles():
      method.hparams(profile)


def test_api_arguments_are_checked(digits, digits_model, digits_original, digits_class0):
  from unlearn_jax.methods import Original
  with pytest.raises(ValueError, match=r"recipe\.epochs: 0 is not allowed"):
    train_classifier(digits_model, digits.train, Recipe(epochs=0), seed=0, progress=False)
  with pytest.raises(ValueError, match=r"recipe\.learning_rate: -0\.1"):
    train_classifier(digits_model, digits.train, Recipe(learning_rate=-0.1), seed=0,
                     progress=False)
  original = Original(digits_model, *digits_original)
  with pytest.raises(ValueError, match=r"hparams\.spotter\.epochs: -3 is not allowed"):
    unlearn("spotter", original, digits_class0, seed=0, hparams={"epochs": -3}, progress=False)
  with pytest.raises(ValueError, match=r"seed: '0' is a str"):
    unlearn("ga", original, digits_class0, seed="0", progress=False)


def test_a_checkpointer_of_another_run_is_refused(tmp_path, digits_model, digits_original,
                                                  digits_class0):
  from unlearn_jax.methods import Original
  original = Original(digits_model, *digits_original)
  with ckpt_lib.Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(5, {"x": jnp.ones(2)}, {"run": "first"})
    ckpt.wait()
    with pytest.raises(ValueError, match=r"holds the steps of run 'first', not 'second'"):
      unlearn("ga", original, digits_class0, seed=0, checkpointer=ckpt, run_key="second",
              progress=False)


# ---------------------------------------------------------------- arrays at the API boundary

def test_array_dataset_rejects_bad_arrays():
  images = np.random.default_rng(0).uniform(size=(142, 8, 8, 1)).astype(np.float32)
  labels = np.zeros(142, np.int32)
  with pytest.raises(ValueError, match=r"142 images but 10 labels"):
    ArrayDataset(images, labels[:10])
  with pytest.raises(ValueError, match=r"images are uint8.*/ 255"):
    ArrayDataset((images * 255).astype(np.uint8), labels)
  for bad in (np.nan, np.inf):
    broken = images.copy()
    broken[3, 2, 2, 0] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite"):
      ArrayDataset(broken, labels)
  with pytest.raises(ValueError, match=r"labels are float"):
    ArrayDataset(images, labels.astype(np.float32))
  assert len(ArrayDataset(images, labels).subset(np.arange(5))) == 5


def test_dataset_requires_images_in_unit_range():
  images = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
  good = ArrayDataset(images, np.zeros(4, np.int32))
  scaled = ArrayDataset(images * 255, np.zeros(4, np.int32))
  with pytest.raises(ValueError, match=r"test images range over .*expected \[0, 1\]"):
    Dataset("d", good, scaled, ("a", "b"), (0.5,), (0.2,))


def test_a_forget_mask_must_keep_a_class():
  data = UnlearningData(None, None, forget_classes=(0, 1), num_classes=2)
  with pytest.raises(ValueError, match=r"forget_classes: all 2 classes are forgotten"):
    data.forget_mask  # noqa: B018


# ----------------------------------------------------------------- damaged files and entries

def test_write_atomic_replaces_whole_files(tmp_path):
  path = tmp_path / "x.json"
  ckpt_lib.write_atomic(path, "old")
  ckpt_lib.write_atomic(path, "new")
  assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_truncated_results_json_names_the_file(tmp_path):
  (tmp_path / "results.json").write_text('{"models": {"ga": ')
  with pytest.raises(ValueError, match=r"results\.json: not valid JSON.*run the experiment again"):
    report.report_from_dir(tmp_path)


def _saved_entry(root):
  state = {"w": jnp.arange(1000.0), "b": jnp.ones(3)}
  directory = ckpt_lib.cache_dir_for(root, "original", {"seed": 0})
  with ckpt_lib.Checkpointer(directory) as ckpt:
    ckpt.save(3, state, {"kind": "original", "complete": True, "seconds": 1.0})
    ckpt.wait()
  return directory, jax.eval_shape(lambda: state)


def _train_never(*args):
  raise AssertionError("a damaged entry must not be silently retrained")


@pytest.mark.parametrize("damage", ["truncate_arrays", "overwrite_arrays", "meta"])
def test_a_damaged_cache_entry_is_one_error_naming_the_directory(tmp_path, damage):
  directory, abstract = _saved_entry(tmp_path)
  if damage == "meta":
    files = [directory / "3" / "meta" / "metadata"]
  else:
    files = [p for p in (directory / "3" / "state").rglob("*")
             if p.is_file() and "/d/" in str(p)]
  assert files
  for path in files:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == "truncate_arrays" else b"\x00garbage{")
  with pytest.raises(ckpt_lib.CorruptCheckpointError) as info:
    experiment._cached_training(tmp_path, "original", {"seed": 0}, abstract, _train_never,
                            checkpoint_every=0)
  message = str(info.value)
  assert "\n" not in message and f"delete {directory} and run again" in message


# ----------------------------------------------------------------------- misleading messages

def test_two_forget_specs_are_named_as_such():
  with pytest.raises(ValueError, match=r"forget\.classes and forget\.fraction are given "
                                       r"together"):
    ForgetSpec(classes=(0,), fraction=0.0).validate(10, 100)
  with pytest.raises(ValueError, match=r"none is given \(an empty forget set"):
    ForgetSpec().validate(10, 100)


def test_model_options_field_says_to_pass_the_dict():
  with pytest.raises(ValueError, match=r"""--config\.model\.options='\{"width": 0\.5\}'"""):
    load_config("digits", ["--config.model.options.width=0.5"])


def test_run_without_arguments_says_the_config_is_required(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["run"])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert "required: config" in err and "--config.KEY=VALUE" not in err.splitlines()[-1]


def test_results_and_method_files_are_written_atomically():
  """runner, report and the population runner write JSON and markdown only through
  write_atomic (a plain write_text of a result file would survive a kill half-written)."""
  root = pathlib.Path(runner.__file__).parent
  for name in ("runner.py", "experiment.py", "report.py", "population_runner.py",
               "population_report.py"):
    assert ".write_text(" not in (root / name).read_text(), name
