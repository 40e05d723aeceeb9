"""ToW and the 95 % t-interval over trials: against naive formulas, Retrain against itself, the
table cells, and bad inputs."""

import numpy as np
import pytest

from unlearn_jax import report, summaries
from unlearn_jax.evaluation.tow import SETS, tug_of_war


def _naive_tow(acc, ret):
  out = 1.0
  for key in ("acc/forget", "acc/retain", "acc/test_retain"):
    out = out * (1 - abs(acc[key] - ret[key]) / 100)
  return out


def test_tow_matches_the_formula_and_is_one_against_itself():
  rng = np.random.default_rng(0)
  for _ in range(50):
    acc = {k: float(rng.uniform(0, 100)) for k in SETS.values()}
    ret = {k: float(rng.uniform(0, 100)) for k in SETS.values()}
    assert tug_of_war(acc, ret) == pytest.approx(_naive_tow(acc, ret), rel=1e-12)
    assert tug_of_war(acc, acc) == 1.0
    assert 0.0 <= tug_of_war(acc, ret) <= 1.0
  worst = {"acc/forget": 100.0, "acc/retain": 0.0, "acc/test_retain": 0.0}
  best = {"acc/forget": 0.0, "acc/retain": 100.0, "acc/test_retain": 100.0}
  assert tug_of_war(worst, best) == 0.0


def test_t_interval_has_the_student_t_quantiles():
  # t_{0.975, 1} = 12.7062, t_{0.975, 2} = 4.3027, t_{0.975, 4} = 2.7764 (statistical tables).
  for values, quantile in (([1.0, 3.0], 12.7062), ([0.9, 0.8, 0.7], 4.3027),
                           ([1.0, 2.0, 4.0, 8.0, 16.0], 2.7764)):
    x = np.asarray(values)
    mean, half = summaries.t_interval(values)
    assert mean == pytest.approx(x.mean())
    assert half == pytest.approx(quantile * x.std(ddof=1) / np.sqrt(len(x)), rel=1e-4)
  assert summaries.t_interval([0.5]) == (0.5, 0.0)


def test_cells_show_the_t_interval_for_t_columns_only():
  values = [0.9, 0.8, 0.7]
  assert summaries.cell(values, "t:.3f") == "0.800 ± 0.248"
  assert summaries.cell(values, ".3f") == "0.800 ± 0.082"  # population std
  aggregate = {"mean": 0.8, "std": 0.0816, "values": values}
  assert report._cell(aggregate, "t:.3f") == "0.800 ± 0.248"
  assert report._cell(aggregate, ".3f") == "0.800 ± 0.082"
  assert report._cell(0.912, "t:.3f") == "0.912" and report._cell(None, "t:.3f") == "—"
  summary = {"columns": [{"header": "ToW", "key": "tow", "format": "t:.3f"}],
             "models": {"ga": {"metrics": {"tow": values}}}}
  assert summaries.markdown_table(summary).splitlines()[-1] == "| ga | 0.800 ± 0.248 |"
  assert any(v == pytest.approx(0.2484, abs=1e-4) for v in summaries.numbers(summary))


def test_bad_inputs_name_the_field():
  acc = dict.fromkeys(SETS.values(), 50.0)
  with pytest.raises(ValueError, match=r"retrain\['acc/retain'\]: None"):
    tug_of_war(acc, {"acc/forget": 1.0, "acc/test_retain": 2.0})
  with pytest.raises(ValueError, match=r"accuracies\['acc/forget'\]: 150.0"):
    tug_of_war({**acc, "acc/forget": 150.0}, acc)
  with pytest.raises(ValueError, match=r"accuracies\['acc/forget'\]: nan"):
    tug_of_war({**acc, "acc/forget": float("nan")}, acc)
  with pytest.raises(ValueError, match="values: no value"):
    summaries.t_interval([])
  with pytest.raises(ValueError, match="confidence: 1.5"):
    summaries.t_interval([1.0, 2.0], confidence=1.5)
