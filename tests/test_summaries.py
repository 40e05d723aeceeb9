"""Run summaries: a pure function of a run's results (per-trial values, no large arrays), the
schema check, ``record`` into results/ and the table cells."""

import json

import pytest

from unlearn_jax import cli, summaries

HW = {"platform": "Linux", "processor": "x86_64", "cpu_count": 2, "backend": "cpu",
      "devices": ["cpu:0", "cpu:1"], "process_count": 1}
VERSIONS = {"jax": "0.10.2", "unlearn_jax": "0.1.0"}
COLUMNS = [("UA", "UA", ".1f"), ("PRA strongest at", "PRA/strongest_at", "s"),
           ("Time (s)", "seconds", ".1f")]


def _trial(seed, classes, ua, at):
  return {"config": {"name": "toy", "seed": seed}, "seed": seed, "hardware": HW,
          "versions": VERSIONS, "splits": {"forget": 10, "retain": 90},
          "forget_classes": classes, "columns": COLUMNS,
          "models": {"original": {"metrics": {"UA": 1.0, "PRA/strongest_at": at, "seconds": 2.0},
                                  "details": {"feature_rows": [[0.0, 1.0]] * 150},
                                  "info": {}},
                     "spotter": {"metrics": {"UA": ua, "PRA/strongest_at": None, "seconds": 3.0},
                                 "details": {"curve_points": [[0.1, 2.0]]},
                                 "info": {"perturbed_examples": 10, "history": [1, 2]}}},
          "noise_floor": {"forget/rc/procrustes/mean": 0.2 + seed,
                          "forget/rc/procrustes/std": 0.01},
          "wall_seconds": 5.0}


def _run():
  trials = [_trial(0, [0], 100.0, "α=0.60 K=5 cos"), _trial(1, [3], None, "α=0.80 K=1 L2")]
  aggregate = {**trials[0], "config": {"name": "toy", "trials": [0, 1]}, "seed": [0, 1],
               "wall_seconds": 10.0}
  return aggregate, trials


def test_summary_keeps_per_trial_values_and_drops_large_arrays():
  aggregate, trials = _run()
  s = summaries.summarize(aggregate, trials=trials, command="unlearn-jax run toy.py",
                          hparams={"spotter": {"epochs": 5}}, date="2026-01-01T00:00:00Z")
  assert s["schema"] == 1 and s["experiment"] == "toy" and s["kind"] == "protocol"
  assert s["seeds"] == [0, 1] and s["forget_classes"] == [[0], [3]]
  assert s["command"] == "unlearn-jax run toy.py" and s["date"] == "2026-01-01T00:00:00Z"
  assert s["config"] == aggregate["config"] and s["hardware"] == HW
  spotter = s["models"]["spotter"]
  assert spotter["metrics"]["UA"] == [100.0, None] and spotter["hparams"] == {"epochs": 5}
  assert spotter["reads"] == ["forget"] and spotter["info"] == [{"perturbed_examples": 10}] * 2
  assert s["models"]["original"]["metrics"]["PRA/strongest_at"] == ["α=0.60 K=5 cos",
                                                                    "α=0.80 K=1 L2"]
  assert s["models"]["original"]["hparams"] is None
  assert [f["forget/rc/procrustes/mean"] for f in s["noise_floor"]] == [0.2, 1.2]
  assert s["columns"][1] == {"header": "PRA strongest at", "key": "PRA/strongest_at",
                             "format": "s"}
  text = summaries.dumps(s)
  assert "feature_rows" not in text and "curve" not in text and "history" not in text
  assert json.loads(text) == s
  assert summaries.summarize(trials[0])["seeds"] == [0]  # a single run: lists of one


def test_population_summary_flattens_spreads_and_keeps_the_lira_table():
  results = {"config": {"name": "pop", "target": {"classes": []}}, "protocol": "ulira",
             "seed": 0, "hardware": HW, "versions": VERSIONS,
             "sizes": {"pool": 100, "target": 10, "test": 50, "models": 8}, "excluded": {},
             "rows": {"original": {"metrics": {"u_lira": {"accuracy": {"mean": 0.6, "std": 0.1},
                                                          "targets": 8},
                                               "vulnerability": {"mean": 0.55, "q50": 0.5},
                                               "skipped": 0, "seconds": 3.0},
                                   "per_example_accuracy": [0.5] * 10}},
             "lira": {"online": {"auc": {"mean": 0.62, "std": 0.01}}},
             "checks": {"original_above_chance": True}, "wall_seconds": 9.0}
  s = summaries.summarize(results, hparams={"original": {"epochs": 5}})
  metrics = s["models"]["original"]["metrics"]
  assert metrics["u_lira.accuracy"] == [{"mean": 0.6, "std": 0.1}]
  assert metrics["vulnerability.mean"] == [0.55] and metrics["skipped"] == [0]
  assert "per_example_accuracy" not in summaries.dumps(s)
  assert s["tables"]["lira"]["rows"]["online"]["auc"] == [{"mean": 0.62, "std": 0.01}]
  assert s["kind"] == "population" and s["checks"] == [{"original_above_chance": True}]
  assert "| original | 0.600 ± 0.100 |" in summaries.markdown_table(s)
  assert "| online | 0.620 ± 0.010 |" in summaries.markdown_table(s, "lira")
  with pytest.raises(ValueError, match="no table 'nope'"):
    summaries.markdown_table(s, "nope")


def test_table_cells_show_mean_std_and_how_many_trials_measured():
  aggregate, trials = _run()
  table = summaries.markdown_table(summaries.summarize(aggregate, trials=trials))
  assert "| spotter | 100.0 (1/2) | — | 3.0 ± 0.0 |" in table
  assert "| original | 1.0 ± 0.0 | α=0.60 K=5 cos / α=0.80 K=1 L2 | 2.0 ± 0.0 |" in table
  assert summaries.cell([1, 2], "d") == "1.5 ± 0.5" and summaries.cell([3], "d") == "3"


def test_record_copies_the_summary_and_checks_its_schema(tmp_path, capsys):
  aggregate, trials = _run()
  run = tmp_path / "run"
  run.mkdir()
  with pytest.raises(FileNotFoundError, match="no summary.json in"):
    summaries.record(run, tmp_path / "repo")
  s = summaries.summarize(aggregate, trials=trials)
  summaries.write_summary(s, run)
  summaries.set_command(run, "unlearn-jax run experiments/toy.py")
  assert cli.main(["record", str(run), "--root", str(tmp_path / "repo")]) == 0
  recorded = tmp_path / "repo" / "results" / "toy.json"
  assert summaries.read_summary(recorded)["command"] == "unlearn-jax run experiments/toy.py"
  assert "recorded" in capsys.readouterr().err  # a message, through the unlearn_jax logger
  assert summaries.load_summaries(tmp_path / "repo") == {"toy": summaries.read_summary(recorded)}
  recorded.write_text(json.dumps({**s, "schema": 2}))
  with pytest.raises(ValueError, match="schema 2; this code reads schema 1"):
    summaries.read_summary(recorded)
  assert summaries.absolute_paths({"config": {"data_dir": "/home/me/x", "name": "toy"},
                                   "list": ["runs/a", "~/b"]}) == ["config.data_dir", "list[1]"]


def test_runner_writes_the_summary_of_a_run_with_trials(tmp_path):
  """runner._write: results.json, the table and summary.json with the per-trial values and the
  hyper-parameters each model used (the original's recipe, each method's resolved profile)."""
  from unlearn_jax import runner
  aggregate, trials = _run()
  aggregate["config"] = {"name": "toy", "trials": [0, 1], "original": {"epochs": 3},
                         "methods": ["spotter"], "retrain_seeds": [1], "profile": "small",
                         "hparams": {"spotter": {"epochs": 2}}}
  runner._write(aggregate, tmp_path, trials)
  s = summaries.read_summary(tmp_path / "summary.json")
  assert s["models"]["spotter"]["metrics"]["UA"] == [100.0, None]
  assert s["models"]["original"]["hparams"] == {"epochs": 3}
  assert s["models"]["spotter"]["hparams"]["epochs"] == 2
  assert s["models"]["spotter"]["hparams"]["lambda1"] == 0.7  # the profile's, resolved
  assert (tmp_path / "results.md").exists() and (tmp_path / "results.json").exists()
