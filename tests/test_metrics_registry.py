"""The metric registry: config schema, settings, validation, and a user's metric end to end."""

import dataclasses
import json
import pathlib
import sys

import pytest

from unlearn_jax import runner
from unlearn_jax.config import experiment_defaults, load_config
from unlearn_jax.evaluation import registry
from unlearn_jax.report import columns

USER_CONFIG = """
import retain_norm_metric  # noqa: F401  (registers config.evaluation.retain_norm)

from unlearn_jax.config import experiment_defaults


def get_config(arg=None):
  c = experiment_defaults()
  c.name = "user_metric"
  c.methods = ("ft",)
  c.retrain_seeds = ()
  c.original.epochs = 2
  c.evaluation.representation = False
  c.evaluation.inversion.enabled = False
  c.evaluation.relearn.max_steps = 5
  c.evaluation.pra.shots = (5,)
  c.evaluation.pra.num_draws = 1
  c.evaluation.retain_norm.max_examples = 50
  return c
"""


@pytest.fixture
def fresh_registry(monkeypatch):
  """Registrations made in a test (and the example module's import) are undone after it."""
  monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))
  monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
  sys.modules.pop("retain_norm_metric", None)
  yield
  sys.modules.pop("retain_norm_metric", None)


def test_defaults_keep_todays_schema_and_table_order():
  ev = experiment_defaults().evaluation
  assert ev.mia is True and ev.representation is True
  assert ev.pra.shots == (1, 5, 10) and ev.inversion.models[0] == "original"
  assert list(registry.BUILTIN) == [m.name for m in registry.metrics()][:len(registry.BUILTIN)]
  assert [key for _, key, _ in columns()] == [
      "UA", "RA", "TA", "acc/test_forget", "MIA", "gap", "OU/pgd", "OU/gaussian", "PRA/forget",
      "PRA/strongest_at", "PRA/ref", "PRA/ref_kept_drop",
      "FM/forget", "HR/forget", "HR_labels/forget", "inversion/psnr", "CKA/retrain/forget",
      "CKA/retrain/retain", "seconds"]


def test_resolve_gives_plain_typed_settings_and_names_bad_keys():
  settings = registry.resolve({"mia": False, "pra": {"shots": [5], "num_draws": 2}})
  assert settings["mia"] == registry.Settings(enabled=False)
  assert settings["pra"].shots == (5,) and settings["pra"].num_draws == 2
  assert settings["relearn"].threshold == 90.0
  with pytest.raises(ValueError, match=r"config.evaluation.nope: unknown metric"):
    registry.resolve({"nope": True})
  with pytest.raises(ValueError, match=r"config.evaluation.pra.shot: unknown setting"):
    registry.resolve({"pra": {"shot": 5}})
  with pytest.raises(ValueError, match=r"config.evaluation.relearn.max_steps: 'x'"):
    registry.resolve({"relearn": {"max_steps": "x"}})


def test_register_rejects_a_duplicate_or_unknown_need(fresh_registry):
  def evaluate(*args, **kwargs):
    return {}, {}

  with pytest.raises(ValueError, match="'pra': already registered"):
    registry.register(registry.Metric("pra", evaluate))
  with pytest.raises(ValueError, match=r"unknown needs \['gpu'\]"):
    registry.register(registry.Metric("x", evaluate, needs=("gpu",)))


def _quick(tmp_path, data_dir, config_file, *overrides):
  return load_config(str(config_file), [f"--config.output_dir={tmp_path / 'out'}",
                                        f"--config.cache_dir={tmp_path / 'cache'}",
                                        f"--config.data.data_dir={data_dir}",
                                        "--config.progress=False", *overrides])


def test_a_metric_needing_retrain_fails_validation_naming_its_key(tmp_path, data_dir,
                                                                  fresh_registry):
  registry.register(registry.Metric("needs_retrain", lambda *a, **k: ({}, {}),
                                    needs=("retrain",)))
  path = tmp_path / "user.py"
  path.write_text(USER_CONFIG)
  config = _quick(tmp_path, data_dir, path)
  with pytest.raises(ValueError, match=r"Retrain disabled.*'config.evaluation.needs_retrain'"):
    runner.validate(config)
  with config.unlocked():
    config.evaluation.needs_retrain.enabled = False
    config.evaluation.inversion.enabled = True
  runner.validate(config)  # named models that this run does not have are skipped
  with config.unlocked():
    config.evaluation.inversion.models = ("original", "gaa")
  with pytest.raises(ValueError, match=r"config.evaluation.inversion.models: \['gaa'\] are not "
                                       r"methods; known: original, bad_teacher"):
    runner.validate(config)
  with config.unlocked():
    config.evaluation.inversion.enabled = False
    config.evaluation.typo = True
  with pytest.raises(ValueError, match=r"config.evaluation.typo: unknown metric"):
    runner.validate(config)


def test_a_users_metric_in_one_file_is_run_and_tabulated(tmp_path, data_dir, fresh_registry):
  path = tmp_path / "user.py"
  path.write_text(USER_CONFIG)
  results = runner.run_experiment(_quick(tmp_path, data_dir, path))
  assert ["‖z‖ D_r", "norm/retain", ".2f"] in results["columns"]
  for name in ("original", "ft"):
    assert results["models"][name]["metrics"]["norm/retain"] > 0
  saved = json.loads((tmp_path / "out" / "results.json").read_text())
  assert saved["models"]["ft"]["metrics"]["norm/retain"] == results["models"]["ft"]["metrics"][
      "norm/retain"]
  table = (tmp_path / "out" / "results.md").read_text()
  assert "| ‖z‖ D_r | Time (s) |" in table
  settings = runner.evaluation_settings(_quick(tmp_path, data_dir, path))
  assert dataclasses.asdict(settings["retain_norm"]) == {"enabled": True, "max_examples": 50}


def test_evaluate_model_takes_plain_settings(digits_model, digits_original, digits_class0):
  from unlearn_jax.evaluation import suite
  off = {m.name: False if m.switch else {"enabled": False} for m in registry.metrics()}
  settings = registry.resolve(off | {"mia": True})
  context = suite.prepare_context(digits_model, digits_original, digits_class0, [],
                                  settings=settings, seed=0)
  assert context.shared == {} and context.retrain_metrics is None
  row = suite.evaluate_model(digits_model, *digits_original, context, settings=settings, seed=0)
  assert {"UA", "MIA", "norm/forget", "CKA/original/forget"} <= set(row["metrics"])
  assert not {"gap", "PRA/forget", "OU/pgd"} & set(row["metrics"])
  assert set(row["details"]) == {"projection"}
