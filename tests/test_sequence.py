"""Sequential deletion requests (unlearn_jax/sequence.py): the requests' data, the teacher switch,
and one digits sequence end to end (killed and resumed, each request from the previous model,
Retrain per cumulative set, evaluate, a one-request sequence equal to the ordinary run). Bad
sequences failing before training: tests/test_experiments.py, with every bad config."""

import json
import shutil

import jax
import numpy as np
import pytest

import unlearn_jax
from unlearn_jax import experiment, report, runner, sequence, summaries
from unlearn_jax import unlearning as unlearn_lib
from unlearn_jax.config import load_config
from unlearn_jax.methods import Original

TIMING = {"seconds", "UA/request"}  # wall times; UA/request exists in sequences only


def _config(tmp, data_dir, *overrides, spec="digits_sequential:quick", out="out"):
  return load_config(spec, [f"--config.output_dir={tmp / out}",
                            f"--config.cache_dir={tmp / 'cache'}",
                            f"--config.data.data_dir={data_dir}", "--config.progress=False",
                            *overrides])


def test_random_batches_are_disjoint_and_each_request_sees_its_own(tmp_path, data_dir, digits):
  config = _config(tmp_path, data_dir, spec="digits_sequential:random")
  batches = sequence.request_indices(config, digits)
  assert [len(b) for b in batches] == [72] * 3  # round(0.05 · 1,437)
  assert len(np.unique(np.concatenate(batches))) == 216
  exp = experiment.Experiment(config, request=2)
  assert exp.out == tmp_path / "out" / "req2" and exp.splits.forget_classes == ()
  np.testing.assert_array_equal(exp.splits.forget_idx, np.sort(np.concatenate(batches[:2])))
  np.testing.assert_array_equal(exp.unlearning_splits.forget_idx, batches[1])
  assert not np.isin(exp.unlearning_splits.retain_idx, np.concatenate(batches[:2])).any()
  assert len(exp.unlearning_splits.retain_idx) == 1437 - 144
  again = sequence.request_indices(load_config("digits_sequential:random"), digits)
  other = sequence.request_indices(load_config("digits_sequential:random", ["--config.seed=1"]),
                                   digits)
  assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
  assert not np.array_equal(batches[0], other[0])


def test_teacher_original_replaces_the_plans_teacher(digits_model, digits_original, digits_ga,
                                                     digits_class0, monkeypatch):
  """With ``teacher`` the plan's teacher "original" is θ_o while it starts from another model."""
  seen = []

  def capture(plan, **kwargs):
    seen.append(plan)
    raise KeyboardInterrupt

  monkeypatch.setattr(unlearn_lib, "execute_plan", capture)
  start = Original(digits_model, *digits_ga)
  for teacher in (None, digits_original):
    with pytest.raises(KeyboardInterrupt):
      unlearn_lib.unlearn("spotter", start, digits_class0, seed=0, teacher=teacher,
                          progress=False)
  for plan, want in zip(seen, (digits_ga, digits_original), strict=True):
    assert plan.params is start.params
    for a, b in zip(jax.tree.leaves(plan.teachers["original"]), jax.tree.leaves(want),
                    strict=True):
      assert a is b


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory, data_dir):
  """digits_sequential:quick (classes 0 then 3; Retrain, Spotter, OPC), killed while OPC
  unlearns request 2, then run again. Returns (tmp dir, results, unlearn calls per leg)."""
  tmp = tmp_path_factory.mktemp("sequence")
  config = _config(tmp, data_dir)
  calls, real = [], unlearn_lib.unlearn

  def flaky(method, original, splits, **kwargs):
    calls.append((method.name, tuple(np.unique(splits.forget.labels))))
    if calls[-1] == ("opc", (3,)) and calls.count(calls[-1]) == 1:
      raise KeyboardInterrupt
    return real(method, original, splits, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(experiment, "unlearn", flaky)
    with pytest.raises(KeyboardInterrupt):
      runner.run_experiment(config)
    first = list(calls)
    results = runner.run_experiment(config)
  return tmp, results, first, calls[len(first):]


def test_a_killed_sequence_resumes_where_it_stopped(sequence_run):
  _, results, first, second = sequence_run
  assert first == [("spotter", (0,)), ("opc", (0,)), ("spotter", (3,)), ("opc", (3,))]
  assert second == [("opc", (3,))]  # request 1 and Spotter's request 2 are kept
  assert [r["request"] for r in results["requests"]] == [
      {"index": 1, "of": 2, "classes": [0], "size": 142},
      {"index": 2, "of": 2, "classes": [3], "size": 146}]


def test_each_request_forgets_on_top_of_the_last_and_retain_holds(sequence_run):
  """After each request: the request's and the cumulative forget set are forgotten, Spotter
  keeps retain accuracy; Retrain is trained on the cumulative set (cached per request)."""
  tmp, results, _, _ = sequence_run
  original_ra = results["requests"][0]["models"]["original"]["metrics"]["RA"]
  for r, request in enumerate(results["requests"], start=1):
    assert request["forget_classes"] == [0, 3][:r]
    assert request["splits"]["forget"] == [142, 288][r - 1]
    models = {n: m["metrics"] for n, m in request["models"].items()}
    assert models["retrain"]["UA"] == 100.0 and models["retrain"]["gap"] == 0.0
    assert models["original"]["UA"] < 5.0
    assert models["opc"]["UA/request"] >= 90.0
    assert models["spotter"]["UA/request"] >= 90.0 and models["spotter"]["UA"] >= 90.0
    assert models["spotter"]["RA"] >= original_ra - 3.0
    meta = unlearn_jax.load_run(tmp / "out" / f"req{r}", ["retrain"]).meta["retrain"]
    assert meta["forget_classes"] == [0, 3][:r]
  assert len(list((tmp / "cache").glob("retrain-*"))) == 2
  assert results["models"]["spotter"]["metrics"] == results["requests"][1]["models"]["spotter"][
      "metrics"]  # the table's rows are the last request's
  summary = json.loads((tmp / "out" / "summary.json").read_text())
  assert summary["tables"]["requests/gap"]["rows"]["retrain"] == {"1": [0.0], "2": [0.0]}
  assert "### Avg. Gap" in (tmp / "out" / "results.md").read_text()
  assert (tmp / "out" / "sequence.png").stat().st_size > 10_000
  with pytest.raises(FileNotFoundError, match=r"a sequence of 2 requests; load .*req1"):
    unlearn_jax.load_run(tmp / "out")


def test_request_2_is_the_method_applied_to_request_1s_model(sequence_run):
  """θ_u^(2) = OPC(θ_u^(1), D_f^(2), D_r^(2)) bit for bit: D_f^(2) class 3 alone, D_r^(2)
  without classes 0 and 3."""
  tmp, _, _, _ = sequence_run
  first, second = (unlearn_jax.load_run(tmp / "out" / f"req{r}", ["opc"]) for r in (1, 2))
  model, params, model_state = first.models["opc"]
  splits = experiment.Experiment(first.config, request=2).unlearning_splits
  assert set(np.unique(splits.retain.labels)) == set(range(10)) - {0, 3}
  again = unlearn_lib.unlearn("opc", Original(model, params, model_state), splits, seed=0,
                              progress=False)
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(second.models["opc"][1]),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def test_evaluate_re_evaluates_every_request_without_training(sequence_run, monkeypatch):
  """``unlearn-jax evaluate`` on a sequence: every request's kept models, new settings, no
  training (MIA off here: the gap, which needs it, goes)."""
  tmp, results, _, _ = sequence_run
  shutil.copytree(tmp / "out", tmp / "copy")  # the last test below runs in "out"
  for name in ("unlearn", "train_classifier", "train_classifiers"):
    monkeypatch.setattr(experiment, name, lambda *a, **k: pytest.fail("training started"))
  again = runner.evaluate_run(tmp / "copy", ["--config.evaluation.mia=False"])
  for before, after in zip(results["requests"], again["requests"], strict=True):
    for name, row in after["models"].items():
      assert "gap" not in row["metrics"]
      for key in ("UA", "UA/request", "RA", "TA"):
        assert row["metrics"][key] == before["models"][name]["metrics"][key], (name, key)


def test_trials_of_a_sequence_aggregate_every_request(sequence_run, data_dir, tmp_path):
  """With trials, each request's metrics are mean ± std over trials (here the same trial twice:
  std 0) in the report and the summary."""
  tmp, results, _, _ = sequence_run
  config = _config(tmp, data_dir, "--config.trials=(0, 0)")
  both = runner.json_safe(runner._aggregate(config, [results, results]))
  assert [r["request"]["classes"] for r in both["requests"]] == [[0], [3]]
  gap = both["requests"][1]["models"]["spotter"]["metrics"]["gap"]
  assert gap["values"] == [results["requests"][1]["models"]["spotter"]["metrics"]["gap"]] * 2
  assert gap["std"] == 0.0
  report.write_report(both, tmp_path)
  assert "| retrain | 0.00 ± 0.00 | 0.00 ± 0.00 |" in (tmp_path / "results.md").read_text()
  summary = summaries.summarize(both, trials=[results, results])
  assert summary["tables"]["requests/gap"]["rows"]["spotter"]["2"] == gap["values"]


def _numbers(models: dict) -> dict:
  return {n: {k: v for k, v in m["metrics"].items() if k not in TIMING} for n, m in models.items()}


def test_a_sequence_of_one_request_is_the_ordinary_run(sequence_run, data_dir, monkeypatch):
  """Request 1 depends on no later request (a one-request sequence finds its models kept), and
  equals the ordinary run forgetting class 0, number for number."""
  tmp, results, _, _ = sequence_run
  with monkeypatch.context() as patch:
    patch.setattr(experiment, "unlearn", lambda *a, **k: pytest.fail("request 1 unlearned again"))
    one = runner.run_experiment(_config(tmp, data_dir, "--config.sequence.classes=((0,),)"))
  assert one["requests"][0]["models"] == results["requests"][0]["models"]
  ordinary = runner.run_experiment(_config(tmp, data_dir, "--config.sequence.classes=()",
                                           "--config.forget.classes=(0,)",
                                           out="ordinary"))
  assert "requests" not in ordinary and list(ordinary["models"]) == list(one["models"])
  assert _numbers(ordinary["models"]) == _numbers(one["models"])
  for row in one["models"].values():
    assert row["metrics"]["UA/request"] == row["metrics"]["UA"]


