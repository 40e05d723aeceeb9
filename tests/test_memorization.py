"""Memorization scores and strata (docs/math.md §7.8) against naive references, the protocol's
bad configs (each before any training) and one end-to-end run of digits_memorization on the real
digits."""

import json

import numpy as np
import pytest

from unlearn_jax import population_runner, seeding, summaries
from unlearn_jax.config import load_config
from unlearn_jax.data.splits import memorization_strata
from unlearn_jax.evaluation import klom
from unlearn_jax.evaluation.memorization import memorization_scores
from unlearn_jax.population_experiment import Setting


def test_memorization_scores_equal_a_per_example_loop():
  rng = np.random.default_rng(0)
  members = rng.random((12, 30)) < 0.5
  members[:, 0] = np.arange(12) < 2  # only 2 models trained on example 0
  correct = rng.random((12, 30)) < np.where(members, 0.9, 0.4)
  members[:, 1] = np.arange(12) % 2 == 0
  correct[:, 1] = members[:, 1]  # right iff trained on it
  correct[:, 2] = True  # right by every model
  scores = memorization_scores(correct, members, min_models=3)
  for i in range(30):
    inside, outside = correct[members[:, i], i], correct[~members[:, i], i]
    if min(len(inside), len(outside)) < 3:
      assert np.isnan(scores[i])
    else:
      assert scores[i] == pytest.approx(inside.mean() - outside.mean())
  assert np.isnan(scores[0]) and scores[1] == 1.0 and scores[2] == 0.0
  with pytest.raises(ValueError, match="one shape"):
    memorization_scores(correct, members[:, :3])


def test_strata_follow_rum_disjoint_and_a_function_of_scores_and_seed():
  rng = np.random.default_rng(1)
  scores = np.round(rng.uniform(-0.2, 1.0, 200), 1)  # many ties
  scores[:5] = np.nan  # not estimated: never chosen
  strata = memorization_strata(scores, 20, seed=3)
  assert list(strata) == ["low", "medium", "high"]
  chosen = np.concatenate(list(strata.values()))
  assert len(np.unique(chosen)) == 60 and not np.isin(chosen, np.arange(5)).any()
  rest = np.setdiff1d(np.arange(5, 200), chosen)
  high, low, medium = scores[strata["high"]], scores[strata["low"]], scores[strata["medium"]]
  assert high.min() >= scores[np.setdiff1d(np.arange(5, 200), strata["high"])].max()
  assert low.max() <= scores[rest].min()
  assert np.abs(medium - 0.5).max() <= np.abs(scores[rest] - 0.5).min()
  # Naive reference of "high": the 20 largest, ties broken by the seeded permutation.
  order = list(seeding.host_rng(3, "memorization_strata").permutation(
      np.flatnonzero(np.isfinite(scores))))
  ranked = sorted(order, key=lambda i: (-scores[i], order.index(i)))
  np.testing.assert_array_equal(strata["high"], np.sort(ranked[:20]))
  # The listing order does not change the sets; the seed changes ties only.
  again = memorization_strata(scores, 20, ("high", "low"), seed=3)
  np.testing.assert_array_equal(again["high"], strata["high"])
  np.testing.assert_array_equal(again["low"], strata["low"])
  other = memorization_strata(scores, 20, seed=4)
  assert not np.array_equal(other["low"], strata["low"])
  np.testing.assert_array_equal(np.sort(scores[other["low"]]), np.sort(low))
  with pytest.raises(ValueError, match="195 examples have a score .* fewer than 3 strata × 70"):
    memorization_strata(scores, 70, seed=0)
  with pytest.raises(ValueError, match="distinct names"):
    memorization_strata(scores, 5, ("low", "hard"), seed=0)
  with pytest.raises(ValueError, match="at least one"):
    memorization_strata(scores, 0, seed=0)


@pytest.mark.parametrize("override, message", [
    ("--config.memorization.models=16", r"models: 16.*too small for any stratum.*≥ 32"),
    ("--config.memorization.models=31", r"models: 31"),
    ("--config.methods=('ft',)", "compares every method with Retrain"),
    ("--config.target.classes=(0,)", "no classes"),
    ("--config.memorization.strata=('low','low')", "distinct names"),
])
def test_bad_memorization_configs_fail_before_any_work(override, message):
  config = load_config("digits_memorization", [override])
  with pytest.raises(ValueError, match=message):
    population_runner.validate(config)


def test_too_many_stratum_examples_and_klom_sizes_fail_before_training(data_dir):
  config = load_config("digits_memorization", ["--config.target.size=500",
                                               f"--config.data.data_dir={data_dir}"])
  with pytest.raises(ValueError, match=r"500 examples × 3 strata > pool size 1437"):
    Setting(config)
  config = load_config("digits_ulira:ci", ["--config.population.models=10"])
  with pytest.raises(ValueError, match="multiple of 4"):
    population_runner.validate(config)
  population_runner.validate(load_config("digits_ulira:ci", ["--config.population.models=10",
                                                             "--config.klom=False"]))


def test_digits_memorization_end_to_end(tmp_path, data_dir):
  out = tmp_path / "out"
  config = load_config("digits_memorization:ci", [
      f"--config.output_dir={out}", f"--config.cache_dir={tmp_path / 'c'}",
      f"--config.data.data_dir={data_dir}", "--config.progress=False",
      "--config.methods=('retrain','ft')", "--config.hparams.ft.epochs=1",
      "--config.target.size=40", "--config.memorization.strata=('low','high')",
      "--config.memorization.models=8", "--config.memorization.min_models=4",
      "--config.population.models=4", "--config.original.epochs=2"])
  results = population_runner.run_population_experiment(config)
  rows, strata = results["rows"], results["strata"]
  assert list(rows) == ["original", "retrain", "ft"] and list(strata) == ["low", "high"]
  saved = np.load(out / "populations" / "memorization.npz")
  chosen = memorization_strata(saved["scores"], 40, ("low", "high"), seed=0)
  for s, index in chosen.items():
    np.testing.assert_array_equal(saved[f"stratum_{s}"], index)
    assert strata[s]["pool_indices"] == index.tolist() == strata[s]["train_indices"]
  assert strata["high"]["memorization"]["min"] > strata["low"]["memorization"]["max"]
  # Real data: Retrain gets the memorized examples wrong more often than the typical ones, and
  # the original (trained on them) is further from Retrain there.
  fa = {s: rows["retrain"]["metrics"][s]["forget_accuracy"]["mean"] for s in strata}
  assert fa["high"] < fa["low"]
  assert (rows["original"]["metrics"]["high"]["forget_gap"]
          > rows["original"]["metrics"]["low"]["forget_gap"])
  # KLOM cells are the functions of the saved φ: FT against Retrain's reference half, Retrain's
  # cell the floor (its other half).
  ref = np.load(out / "populations" / "retrain_high.npz")
  forget = ref["forget"]
  reference, other = klom.retrain_reference(ref["phi_pool"][:, forget])
  ft = np.load(out / "populations" / "ft_high.npz")["phi_pool"][:, forget]
  assert rows["ft"]["metrics"]["high"]["klom"]["forget"] == klom.versus(ft, reference)
  assert (rows["retrain"]["metrics"]["high"]["klom"]["forget"]
          == klom.summarize(klom.klom(other, reference)))
  table = (out / "results.md").read_text()
  assert "nan" not in table.lower() and "Stratum high:" in table and "| ft |" in table
  assert (out / "strata.png").stat().st_size > 10_000
  summary = summaries.read_summary(out / "summary.json")
  assert set(summary["tables"]) == {"strata", "low", "high"}
  assert summary["models"]["ft"]["metrics"]["high.klom.forget.p95"] == [
      rows["ft"]["metrics"]["high"]["klom"]["forget"]["p95"]]
  assert "| ft |" in summaries.markdown_table(summary, "high")
  assert json.loads((out / "results.json").read_text())["sizes"]["target"] == 40
