"""Experiments: configs, the runner end to end on digits, determinism, resume, bad configs, CLI."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import unlearn_jax
from unlearn_jax import cli, experiment, runner
from unlearn_jax import unlearning as unlearn_lib
from unlearn_jax.checkpoint import Checkpointer
from unlearn_jax.config import load_config
from unlearn_jax.methods import METHODS
from unlearn_jax.report import columns
from unlearn_jax.training.loop import Hook

ALL_CONFIGS = sorted(pathlib.Path(__file__).parents[1].joinpath("experiments").glob("*.py"))
# Population experiments (a ``protocol`` field) have their own runner and tests (test_populations).
# Variants (``path:arg``) that the config tests load as well.
VARIANTS = ("fashion_mnist_class.py:reference", "fashion_mnist_sequential.py:brief")
EXPERIMENTS = ([str(p) for p in ALL_CONFIGS if "protocol" not in load_config(str(p))]
               + [str(ALL_CONFIGS[0].parent / v) for v in VARIANTS])


def _config_id(spec: str) -> str:
  return pathlib.Path(spec).name.replace(".py", "")
TIMING = {"seconds", "wall_seconds", "evaluation_seconds", "hardware", "versions"}


def _config(tmp_path, data_dir, *overrides, spec="digits:quick"):
  return load_config(spec, [f"--config.output_dir={tmp_path / 'out'}",
                            f"--config.cache_dir={tmp_path / 'cache'}",
                            f"--config.data.data_dir={data_dir}", "--config.progress=False",
                            *overrides])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data_dir):
  """The digits config (reduced epochs) through the CLI, every method."""
  tmp = tmp_path_factory.mktemp("quick")
  code = cli.main(["run", "digits:quick", f"--config.output_dir={tmp / 'out'}",
                   f"--config.cache_dir={tmp / 'cache'}", f"--config.data.data_dir={data_dir}",
                   "--config.progress=False"])
  assert code == 0
  return tmp / "out"


def test_digits_run_writes_json_table_and_plots(quick_run):
  results = json.loads((quick_run / "results.json").read_text())
  assert set(results) >= {"config", "seed", "hardware", "versions", "splits", "forget_classes",
                          "models", "noise_floor", "wall_seconds"}
  methods = list(results["config"]["methods"])
  assert set(methods) == {n for n, m in METHODS.items() if m.variant_of is None}
  assert list(results["models"]) == ["original", *methods]
  for name, row in results["models"].items():
    for _, key, _ in columns():
      assert key in row["metrics"] or key in ("inversion/psnr",), (name, key)
  assert results["models"]["retrain"]["metrics"]["UA"] == 100.0
  assert results["models"]["original"]["metrics"]["UA"] <= 5.0
  assert set(results["noise_floor"]) and results["splits"]["forget"] == 142
  table = (quick_run / "results.md").read_text().splitlines()
  rows = [line.split("|")[1].strip() for line in table if line.startswith("| ")][1:]
  assert rows == ["original", *methods]
  for plot in ("features.png", "pra_alpha.png", "recovery.png", "inversion.png"):
    assert (quick_run / plot).stat().st_size > 10_000


def test_report_regenerates_from_json(quick_run, capsys):
  (quick_run / "results.md").unlink()
  assert cli.main(["report", str(quick_run)]) == 0
  assert "| spotter |" in (quick_run / "results.md").read_text()
  assert "| opc |" in capsys.readouterr().out




def test_later_evaluations_in_the_digits_run(quick_run):
  """Relearning on D_r, the weight-space predictors, ToW and unlearning inversion end to end on
  real digits: Retrain's ToW is 1 and fine-tuning on D_r leaves its forget accuracy at 0; the
  original is at distance 0 from itself and reveals no label; GA's label leaks."""
  results = json.loads((quick_run / "results.json").read_text())
  headers = {header for header, _, _ in results["columns"]}
  assert {"FT(D_r) D_f", "‖θ−θ_o‖", "LMC barrier", "LMC D_f@½", "ToW (95% t)", "UIA label",
          "UIA PSNR"} <= headers
  original, retrain, ga = (results["models"][n]["metrics"] for n in ("original", "retrain", "ga"))
  assert retrain["tow"] == 1.0 and 0.0 <= ga["tow"] < 1.0
  assert retrain["relearn_retain/forget"] == retrain["acc/forget"] == 0.0
  assert original["weight/l2"] == 0.0 and original["lmc/barrier/test"] == 0.0
  assert retrain["weight/l2"] > ga["weight/l2"] > 0.0
  assert original["uia/label"] is None and ga["uia/label"] == 1.0
  assert ga["uia/psnr"] > ga["uia/init_psnr"]
  for plot in ("relearn_retain.png", "lmc.png", "uia.png"):
    assert (quick_run / plot).stat().st_size > 10_000


def test_evaluate_adds_a_later_metric_to_an_older_run(quick_run, tmp_path):
  """A run recorded before ToW existed: ``evaluate`` fills in its default and the override turns
  it on; the kept models give the numbers the full run gave."""
  run = tmp_path / "run"
  shutil.copytree(quick_run, run)
  config = json.loads((run / "config.json").read_text())
  del config["evaluation"]["tow"]
  (run / "config.json").write_text(json.dumps(config))
  off = [f"--config.evaluation.{name}.enabled=False" for name in (
      "ou", "pra", "recovery", "inversion", "relearn", "relearn_retain", "weight_space", "uia")]
  results = runner.evaluate_run(run, [*off, "--config.evaluation.mia=False",
                                      "--config.evaluation.representation=False",
                                      "--config.evaluation.tow.enabled=True",
                                      "--config.progress=False"])
  before = json.loads((quick_run / "results.json").read_text())["models"]
  for name, row in results["models"].items():
    assert row["metrics"]["tow"] == before[name]["metrics"]["tow"], name
  assert "inversion/psnr" not in results["models"]["ga"]["metrics"]


def _numbers(tree):
  if isinstance(tree, dict):
    return {k: _numbers(v) for k, v in tree.items() if k not in TIMING and k != "config"}
  if isinstance(tree, list):
    return [_numbers(v) for v in tree]
  return tree


def test_same_config_and_seed_give_identical_numbers(quick_run, tmp_path, data_dir):
  """A second run from nothing (its own cache: the original and Retrain trained again), its
  dataset read by index from the records rather than kept in memory (the larger-than-memory
  path, ``storage="records"``), repeats the fixture's run to the last bit, for the methods it
  runs."""
  again = runner.run_experiment(_config(
      tmp_path, data_dir, "--config.methods=('retrain', 'ga', 'spotter', 'opc')",
      "--config.data.storage='records'"))
  first = json.loads((quick_run / "results.json").read_text())
  assert list(again["models"]) == ["original", "retrain", "ga", "spotter", "opc"]
  for name, row in again["models"].items():
    assert _numbers(row) == _numbers(first["models"][name]), name
  assert _numbers(again["noise_floor"]) == _numbers(first["noise_floor"])


def test_killed_run_restarts_without_redoing_finished_methods(tmp_path, data_dir, monkeypatch):
  config = _config(tmp_path, data_dir, "--config.methods=('ga', 'spotter')",
                   "--config.evaluation.inversion.enabled=False")
  calls = []
  real = unlearn_lib.unlearn

  def flaky(method, *args, **kwargs):
    calls.append(method.name)
    if method.name == "spotter" and calls.count("spotter") == 1:
      raise KeyboardInterrupt
    return real(method, *args, **kwargs)

  monkeypatch.setattr(experiment, "unlearn", flaky)
  with pytest.raises(KeyboardInterrupt):
    runner.run_experiment(config)
  assert (tmp_path / "out" / "methods" / "ga.json").exists()
  results = runner.run_experiment(config)
  assert calls == ["ga", "spotter", "spotter"]
  assert results["models"]["ga"]["metrics"]["UA"] >= 95.0
  evaluated = []
  for name in ("prepare_context", "evaluate_model", "noise_floor"):
    monkeypatch.setattr(runner.suite, name, lambda *a, name=name, **k: evaluated.append(name))
  again = runner.run_experiment(config)  # everything cached now: no training, no evaluation
  assert calls == ["ga", "spotter", "spotter"] and evaluated == []
  assert again["models"] == results["models"] and again["noise_floor"] == results["noise_floor"]
  # The wall time is the work's, kept with the results: a rerun does not reset it to its own.
  evaluation = [row["info"]["evaluation_seconds"] for row in results["models"].values()]
  assert min(evaluation) > 0 and again["wall_seconds"] == results["wall_seconds"] > sum(evaluation)


# The evaluations with an ``enabled`` switch: off where a test reads only UA and the keys.
_ATTACKS = ("inversion", "ou", "pra", "recovery", "relearn", "relearn_retain", "tow", "uia",
            "weight_space")


def test_readme_example_after_command_1_on_the_same_output_dir(tmp_path, data_dir):
  """A changed config (forget set, Spotter epochs) gives methods new keys: the kept model of the
  earlier config is replaced, not reused. A damaged method result is recomputed."""
  common = ["--config.methods=('retrain', 'ga', 'spotter')", "--config.checkpoint_every=20",
            "--config.retrain_seeds=(1,)", "--config.evaluation.representation=False",
            *(f"--config.evaluation.{name}.enabled=False" for name in _ATTACKS)]
  runner.run_experiment(_config(tmp_path, data_dir, *common))
  changed = _config(tmp_path, data_dir, *common, "--config.forget.classes=(3,)",
                    "--config.hparams.spotter.epochs=3")
  results = runner.run_experiment(changed)
  assert results["forget_classes"] == [3]
  kept = unlearn_jax.load_run(tmp_path / "out", ["spotter"]).meta["spotter"]
  assert kept["key"] == runner.model_key(runner.Experiment(changed), "spotter")
  assert kept["hparams"]["epochs"] == 3 and kept["forget_classes"] == [3]
  assert not (tmp_path / "out" / "checkpoints").exists()  # finished: its steps are removed
  ga = tmp_path / "out" / "methods" / "ga.json"
  ga.write_text(ga.read_text()[:40])  # as a kill during an older, non-atomic write left it
  again = runner.run_experiment(changed)
  assert again["models"]["ga"]["metrics"]["UA"] == results["models"]["ga"]["metrics"]["UA"]
  assert json.loads(ga.read_text())["result"]["metrics"]["UA"] == again["models"]["ga"][
      "metrics"]["UA"]


_CACHED_PROGRAM = """
import sys
import jax
from unlearn_jax.checkpoint import use_compilation_cache
use_compilation_cache(sys.argv[1])
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else 0)
x = jax.jit(lambda a: (a @ a.T).sum())(jax.numpy.arange(64.0).reshape(8, 8))
print(float(x), len(hits))
"""


def test_compilation_cache_is_read_back_by_a_second_process(tmp_path):
  runs = [subprocess.run([sys.executable, "-c", _CACHED_PROGRAM, str(tmp_path / "xla")],
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
          for _ in range(2)]
  (value_1, hits_1), (value_2, hits_2) = runs
  assert value_1 == value_2
  assert int(hits_1) == 0 and int(hits_2) >= 1
  assert any((tmp_path / "xla").iterdir())


def test_killed_unlearning_resumes_bit_identical(tmp_path, digits_model, digits_original,
                                                 digits_class0):
  from unlearn_jax.methods import Original
  original = Original(digits_model, *digits_original)
  full = unlearn_lib.unlearn("opc", original, digits_class0, seed=0, progress=False)

  def kill(step, state):
    if step == 25:
      raise KeyboardInterrupt
    return {}

  with Checkpointer(tmp_path / "ckpt") as ckpt:
    with pytest.raises(KeyboardInterrupt):
      unlearn_lib.unlearn("opc", original, digits_class0, seed=0, progress=False,
                          checkpointer=ckpt, checkpoint_every=10, run_key="k",
                          hooks=[Hook(1, kill)])
    ckpt.wait()
    assert ckpt.latest_step() == 20
    first_leg = ckpt.meta()["seconds"]
    resumed = unlearn_lib.unlearn("opc", original, digits_class0, seed=0, progress=False,
                                  checkpointer=ckpt, checkpoint_every=10, run_key="k")
  assert resumed.history[0]["step"] > 20
  assert first_leg > 0 and resumed.seconds > first_leg  # the time of both legs
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("overrides, message", [
    (["--config.foo=1"], r"config.foo: unknown key"),
    (["--config.methods=('spotter', 'gd')"], r"config.methods: unknown method 'gd'"),
    (["--config.retrain_seeds=()"],
     r"Retrain disabled.*'retrain', 'config.evaluation.representation'"),
    (["--config.hparams.spotter.lambda3=1.0"], r"config.hparams.spotter.lambda3: unknown"),
    (["--config.data.name='cifar11'"], r"config.data.name: unknown dataset 'cifar11'"),
    (["--config.forget.classes=(12,)"], r"forget.classes: class ids \[12\] out of range"),
    (["--config.seed=zero"], r"config.seed"),
    (["--config.original.schedule='linear'"], r"config.original.schedule: 'linear'"),
    (["--config.original.schedule='cosine'", "--config.original.decay=((2, 0.1),)"],
     r"config.original.decay: .* with schedule 'cosine'"),
    (["--config.evaluation.recovery.hr_target='softmax'"],
     r"config.evaluation.recovery.hr_target: 'softmax'"),
    (["--config.evaluation.ou.also=('nope',)"], r"config.evaluation.ou.also: 'nope'"),
    (["--config.evaluation.pra.ref_alpha=2.0"], r"config.evaluation.pra.ref_alpha"),
    # A sequence of deletion requests (config.sequence; the runs: tests/test_sequence.py).
    (["--config.sequence.classes=((0,), (0,))"],
     r"config.sequence.classes: request 2 names class id 0 already forgotten in request 1"),
    (["--config.sequence.classes=((3, 3),)"],
     r"config.sequence.classes: request 1 names class id 3 twice"),
    (["--config.sequence.classes=((0,), ())"], r"config.sequence.classes: request 2 is empty"),
    (["--config.sequence.classes=(0, 3)"],
     r"config.sequence.classes: \(0, 3\); give one tuple of class ids per request"),
    (["--config.sequence.classes=((0,), (12,))"],
     r"config.sequence.classes: class ids \[12\] out of range; allowed 0..9"),
    ([f"--config.sequence.classes={tuple((c,) for c in range(10))}"],
     r"config.sequence.classes: all 10 classes would be forgotten"),
    (["--config.sequence.indices=((1, 2), (2, 5))"],
     r"config.sequence.indices: request 2 names index 2 already forgotten in request 1"),
    (["--config.sequence.indices=((1,), (5000,))"],
     r"config.sequence.indices: \[5000\] out of range; allowed 0..1436"),
    (["--config.sequence.classes=((0,),)", "--config.sequence.batches=2",
      "--config.sequence.batch_fraction=0.1"],
     r"config.sequence: classes and batches are given together"),
    (["--config.sequence.batches=3"],
     r"config.sequence.batch_fraction: None; with batches=3"),
    (["--config.sequence.batches=3", "--config.sequence.batch_fraction=0.4"],
     r"config.sequence.batch_fraction: 0.4.*\(0, 0.3333\)"),
    (["--config.sequence.teacher='student'"],
     r"config.sequence.teacher: 'student'; allowed: previous, original"),
    (["--config.sequence.classes=((0,),)", "--config.trials=(0, 1)",
      "--config.trial_classes=((0,), (3,))"],
     r"config.trial_classes: not used with a sequence"),
])
def test_bad_configs_fail_before_any_training(tmp_path, data_dir, monkeypatch, overrides,
                                              message):
  def no_training(*args, **kwargs):
    raise AssertionError("training started")

  monkeypatch.setattr(experiment, "train_classifier", no_training)
  monkeypatch.setattr(experiment, "train_classifiers", no_training)
  with pytest.raises(ValueError, match=message):
    runner.run_experiment(_config(tmp_path, data_dir, *overrides))


def test_cli_reports_config_errors_cleanly(capsys):
  assert cli.main(["run", "no_such_experiment"]) == 2
  assert "is neither a file nor a known experiment" in capsys.readouterr().err
  assert cli.main(["methods"]) == 0
  out = capsys.readouterr().out
  assert "spotter" in out and "reads forget " in out
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--help"])
  assert exit_info.value.code == 0


@pytest.mark.parametrize("user, expected", [
    ("", {"--xla_force_host_platform_device_count=3", "--xla_gpu_deterministic_ops=true"}),
    ("--xla_gpu_deterministic_ops=false --xla_force_host_platform_device_count=1",
     {"--xla_force_host_platform_device_count=1", "--xla_gpu_deterministic_ops=false"}),
])
def test_cli_xla_flags_default_to_all_cores_and_deterministic_gpu_kernels(monkeypatch, user,
                                                                           expected):
  monkeypatch.setenv("XLA_FLAGS", user)
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
  cli._default_xla_flags()
  assert set(os.environ["XLA_FLAGS"].split()) == expected


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_config_id)
def test_every_experiment_config_validates(path):
  config = load_config(path)
  runner.validate(config)
  assert config.output_dir.startswith("runs/")


# (image shape, classes) of each dataset the configs name, for synthetic tiny stand-ins.
SHAPES = {"digits": ((8, 8, 1), 10), "fashion_mnist": ((28, 28, 1), 10),
          "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
          "svhn_cropped": ((32, 32, 3), 10)}


def _tiny_dataset(name):
  from unlearn_jax.data.datasets import ArrayDataset, Dataset
  shape, classes = SHAPES[name]
  rng = np.random.default_rng(0)

  def part(per_class):
    labels = np.repeat(np.arange(classes), per_class).astype(np.int32)
    return ArrayDataset(rng.uniform(size=(len(labels), *shape)).astype(np.float32), labels)

  return Dataset(name, part(10), part(2), tuple(map(str, range(classes))), (0.5,) * shape[2],
                 (0.25,) * shape[2])


_BUILT = set()  # (model, image shape, classes, profile, method) already built by a config


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_config_id)
def test_every_config_builds_its_first_steps_with_tiny_shapes(path, monkeypatch):
  """Data stand-ins of the config's shapes (10 images per class), ResNet-18's layout at width 1/16
  with one block per stage (half the blocks to compile; the full depth is built in
  test_models) and batch 8: the original's step and every method's first step are built and
  traced."""
  from unlearn_jax.methods import Original, get_method, method_data
  from unlearn_jax.objectives.classifier import classifier_objective
  from unlearn_jax.training.execute import block_objective, prepare
  from unlearn_jax.training.state import create_train_state
  from unlearn_jax.training.step import make_train_step

  config = load_config(path)
  tiny = _tiny_dataset(config.data.name)
  monkeypatch.setattr(runner.runs, "dataset_of", lambda *a, **k: tiny)
  options = ({"width": 0.0625, "stage_sizes": (1, 1, 1, 1)} if config.model.name == "resnet18"
             else {})
  with config.unlocked():
    config.model.options = options
  config.trials, config.trial_classes = (), ()
  exp = runner.Experiment(config)
  recipe = experiment._recipe(config.original)
  state = create_train_state(*exp.model.init(jax.random.key(0)), recipe.make_tx(1))
  batch = {"train": {"image": tiny.train.images[:8], "label": tiny.train.labels[:8],
                     "mask": np.ones(8, np.float32)}}
  step = make_train_step(classifier_objective(exp.model, augment=recipe.augment), recipe.make_tx(1))
  jax.eval_shape(step, state, batch, jax.random.key(0), {"weights": {"ce": 1.0}})
  original = Original(exp.model, *exp.model.init(jax.random.key(1)))
  for name in config.methods:
    built = (config.model.name, tiny.image_shape, tiny.num_classes, config.profile, name)
    if built in _BUILT:  # the same shapes, profile and method as an earlier config's
      continue
    _BUILT.add(built)
    method = get_method(name)
    defaults = method.hparams(config.profile)
    overrides = {k: 8 for k in ("batch_size", "forget_batch_size", "impair_batch_size",
                                "noise_batch") if k in defaults}
    overrides |= {k: 1 for k in ("noise_copies", "noise_steps") if k in defaults}
    splits = exp.splits
    plan = method.build(method.hparams(config.profile, overrides), original,
                        method_data(method, splits.forget, splits.retain, splits.forget_classes,
                                    tiny.num_classes), 0)
    first = create_train_state(plan.params, plan.model_state, plan.tx)
    if plan.blocks:
      prepared = prepare(plan)
      block, position, _ = prepared.schedule[0]
      jax.eval_shape(make_train_step(block_objective(plan, block), plan.tx), first,
                     prepared.batch(block, position, 0, 1), jax.random.key(0), prepared.frozen)


def test_cli_report_leaves_no_file_open(quick_run):
  """``python -W error::ResourceWarning`` over the CLI: nothing it opens is left unclosed."""
  out = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-m", "unlearn_jax.cli",
                        "report", str(quick_run)], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and "ResourceWarning" not in out.stderr, out.stderr[-2000:]
  assert "| Method |" in out.stdout
