"""LiRA, U-LiRA, P1 and P2 (docs/math.md §7.3–§7.5): the §7.6 checks on a real population of 32
digits MLPs (Retrain ≈ 0.5, no unlearning clearly above, U-LiRA ≥ P2, swapping IN/OUT gives 1 − AUC,
random relabelling ≈ 0.5), the σ rules, skipped examples, and the population runner end to end.

Noise: a target is attacked on its 100 forgotten and 100 never-seen examples, so one target's
accuracy has a binomial sd of sqrt(0.25/200) ≈ 0.035 (measured sd over targets: 0.03); the mean
over 32 targets, correlated through the shared shadow fits, is held to ±0.06 around 0.5.
"""

import json

import jax
import numpy as np
import pytest

from unlearn_jax import cli, population_runner, populations, seeding, summaries
from unlearn_jax.config import load_config
from unlearn_jax.data.memberships import balanced_masks
from unlearn_jax.evaluation import challenge, klom, lira
from unlearn_jax.models import make_model
from unlearn_jax.optim import Recipe
from unlearn_jax.population_report import markdown_table

M = 32
NOISE = 0.06


@pytest.fixture(scope="module")
def world(digits):
  """32 MLP originals on balanced halves of digits (T = 200 random), their φ on T, and 32
  Retrain models (each on its own retain set) as the "unlearner"."""
  model = make_model("mlp", num_classes=10, input_shape=digits.image_shape, mean=digits.mean,
                     std=digits.std)
  n = len(digits.train)
  target = np.zeros(n, bool)
  target[seeding.host_rng(0, "target").choice(n, 200, replace=False)] = True
  masks = balanced_masks(M, n, seed=0, strata=target.astype(int))
  recipe = Recipe(epochs=20, batch_size=64)
  originals = populations.train_population(model, digits.train, recipe, seeds=range(M),
                                           masks=masks, progress=False)
  retrained = populations.train_population(model, digits.train, recipe,
                                           seeds=range(100, 100 + M),
                                           masks=masks & ~target, progress=False)
  t_data = digits.train.subset(np.flatnonzero(target))

  def phi(population, data):
    logits = populations.population_logits(population, data)
    return np.asarray(jax.jit(challenge.logit_confidence)(
        logits, np.broadcast_to(data.labels, logits.shape[:2])))

  return {"original": phi(originals, t_data), "retrain": phi(retrained, t_data),
          "original_test": phi(originals, digits.test),
          "retrain_test": phi(retrained, digits.test),
          "seen": masks[:, target], "forgot": masks[:, target]}


def _mean(result, attack="u_lira", key="accuracy"):
  return result[attack][key]["mean"]


def test_retrain_is_at_chance_and_no_unlearning_is_clearly_above(world):
  retrain = lira.u_mia(world["retrain"], world["forgot"], world["seen"], seed=0, variance="fixed")
  original = lira.u_mia(world["original"], world["forgot"], world["seen"], seed=0,
                        variance="fixed")
  for attack in ("u_lira", "p2"):
    for key in ("accuracy", "auc"):
      assert abs(_mean(retrain, attack, key) - 0.5) < NOISE, (attack, key, retrain[attack])
  # No unlearning: 0.576 accuracy, 0.63 AUC measured; the mean's own noise is ≈ 0.006.
  assert _mean(original) > 0.55 and _mean(original, key="auc") > 0.58
  assert _mean(original) >= _mean(original, "p2") - NOISE  # U-LiRA ≥ P2
  assert retrain["skipped"] == 0 and retrain["u_lira"]["targets"] == M
  assert retrain["vulnerability"]["examples"] == 200
  assert original["vulnerability"]["mean"] > retrain["vulnerability"]["mean"]
  p1_retrain = lira.p1(world["retrain"], world["forgot"], world["retrain_test"], seed=0)
  p1_original = lira.p1(world["original"], world["forgot"], world["original_test"], seed=0)
  assert abs(p1_retrain["accuracy"]["mean"] - 0.5) < NOISE
  # The population loss attack is weaker than U-LiRA: the paper's point.
  assert 0.5 < p1_original["accuracy"]["mean"] < _mean(original) and p1_original["models"] == M


def test_random_relabelling_is_at_chance(world):
  relabelled = balanced_masks(M, world["seen"].shape[1], seed=99)
  result = lira.u_mia(world["original"], relabelled, relabelled, seed=0, variance="fixed")
  assert abs(_mean(result) - 0.5) < NOISE and abs(_mean(result, key="auc") - 0.5) < NOISE


def test_swapping_in_and_out_turns_auc_into_one_minus_auc(world):
  phi, forgot, seen = world["original"], world["forgot"], world["seen"]
  shadow, target = np.arange(M) % 4 != 0, 0
  fit = lira.fit_gaussians(phi[shadow], forgot[shadow], phi[shadow], ~seen[shadow])
  swapped = lira.fit_gaussians(phi[shadow], ~seen[shadow], phi[shadow], forgot[shadow])
  labels = forgot[target]
  auc = lira.attack_metrics(lira.log_likelihood_ratio(phi[target], fit), labels)["auc"]
  auc_swapped = lira.attack_metrics(lira.log_likelihood_ratio(phi[target], swapped),
                                    labels)["auc"]
  assert auc > 0.6 and auc_swapped == pytest.approx(1 - auc, abs=1e-12)


def test_lira_online_offline_and_fixed_variance_detect_membership(world):
  for variance, offline in (("per_example", False), ("fixed", False), ("per_example", True)):
    result = lira.lira(world["original"], world["seen"], variance=variance, offline=offline)
    assert result["metrics"]["auc"]["mean"] > 0.6 and result["skipped"] == 0, (variance, offline)


def test_sigma_rules_floor_and_skipped_examples():
  rng = np.random.default_rng(0)
  phi = rng.normal(size=(40, 3))
  is_in = np.zeros((40, 3), bool)
  is_in[:20] = True
  is_in[:, 2] = False
  is_in[0, 2] = True  # example 2: a single IN value
  fit = lira.fit_gaussians(phi, is_in, phi, ~is_in, min_per_example=10)
  assert list(fit.valid) == [True, True, False]
  assert fit.sigma_in[0] == pytest.approx(np.std(phi[:20, 0]))  # ≥ 10 values on both sides
  auto = lira.fit_gaussians(phi, is_in, phi, ~is_in)  # < 32 values: the pooled σ per side
  assert auto.sigma_in[0] == auto.sigma_in[1] != fit.sigma_in[0]
  flat = lira.fit_gaussians(np.ones((40, 3)), is_in, np.ones((40, 3)), ~is_in)
  assert (flat.sigma_in == lira.SIGMA_FLOOR).all()  # σ never 0
  seen = np.ones((8, 3), bool)
  forgot = seen.copy()
  forgot[:, 2] = False  # example 2 has no never-seen values: skipped in every fold, counted
  forgot[::2] = ~forgot[::2]
  seen = forgot.copy()
  seen[:, 2] = True
  result = lira.u_mia(rng.normal(size=(8, 3)), forgot & seen, seen, seed=0, folds=4)
  assert result["skipped"] == 4 and result["skipped_examples"] == 1
  assert np.isnan(result["per_example_accuracy"][2])
  table = markdown_table({"x": result | {"p1": lira.p1(rng.normal(size=(8, 3)), forgot & seen,
                                                         rng.normal(size=(8, 2)), seed=0)}},
                         (("acc", "u_lira.accuracy", ".3f"), ("P1", "p1.accuracy", ".3f"),
                          ("skipped", "skipped", "d")))
  assert "nan" not in table.lower() and "| — |" in table


def test_batched_logistic_regression_equals_scikit_learn():
  from sklearn.linear_model import LogisticRegression
  rng = np.random.default_rng(5)
  x = np.concatenate([rng.normal(0, 1, (3, 40)), rng.normal(1.5, 1, (3, 40))], axis=1)
  y = np.repeat([0.0, 1.0], 40)[None, :].repeat(3, axis=0)
  a, b = lira.fit_logistic(x, y, np.ones_like(x))
  for p in range(3):
    ref = LogisticRegression(tol=1e-10).fit(x[p][:, None], y[p])
    assert a[p] == pytest.approx(ref.coef_[0, 0], rel=1e-5)
    assert b[p] == pytest.approx(ref.intercept_[0], rel=1e-5)


def test_bad_inputs_of_the_attacks():
  with pytest.raises(ValueError, match="not in its training half"):
    lira.u_mia(np.zeros((8, 4)), np.ones((8, 4), bool), np.zeros((8, 4), bool), seed=0)
  with pytest.raises(ValueError, match="folds"):
    lira.model_folds(3, 4)
  with pytest.raises(ValueError, match="variance"):
    lira.fit_gaussians(np.zeros((4, 2)), np.ones((4, 2), bool), np.zeros((4, 2)),
                       np.ones((4, 2), bool), variance="global")
  with pytest.raises(ValueError, match="positives and negatives"):
    lira.attack_metrics(np.zeros(4), np.ones(4, bool))


@pytest.mark.parametrize("spec", ["digits_challenge", "digits_challenge:quick", "digits_ulira",
                                  "digits_ulira:class", "digits_ulira:ci", "fashion_mnist_ulira",
                                  "fashion_mnist_ulira:class",
                                  "digits_memorization", "digits_memorization:ci",
                                  "fashion_mnist_memorization"])
def test_every_population_config_validates(spec):
  config = load_config(spec)
  population_runner.validate(config)
  assert config.output_dir.startswith("runs/")


def test_population_runner_end_to_end_and_cached(tmp_path, data_dir):
  overrides = [f"--config.output_dir={tmp_path / 'out'}", f"--config.cache_dir={tmp_path / 'c'}",
               f"--config.data.data_dir={data_dir}", "--config.progress=False",
               "--config.population.models=8", "--config.original.epochs=2",
               "--config.hparams.ft.epochs=1"]
  # U-LiRA with Retrain (for its KLOM columns), the challenge with FT alone.
  for spec, plot, methods in (("digits_ulira:ci", "vulnerability.png", ["retrain", "ft"]),
                              ("digits_challenge:quick", "epsilon.png", ["ft"])):
    config = load_config(spec, [*overrides, f"--config.methods={tuple(methods)}"])
    results = population_runner.run_population_experiment(config)
    assert list(results["rows"]) == ["original", *methods]
    assert (tmp_path / "out" / plot).stat().st_size > 5_000
    table = (tmp_path / "out" / "results.md").read_text()
    assert "nan" not in table.lower() and "| ft |" in table and "Excluded: spotter" in table
    assert ("Checks (docs/math.md §7.6)" in table) == (config.protocol == "ulira")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["sizes"]["models"] == 8
    assert len(np.load(tmp_path / "out" / "populations" / "ft.npz")["seeds"]) == 8
    summary = summaries.read_summary(tmp_path / "out" / "summary.json")
    assert summary["kind"] == "population" and list(summary["models"]) == ["original", *methods]
    assert summary["models"]["ft"]["hparams"]["epochs"] == 1 and summary["sizes"][0]["models"] == 8
    assert summary["models"]["ft"]["metrics"]["seconds"] == [results["rows"]["ft"]["metrics"][
        "seconds"]]
    if config.protocol == "ulira":  # KLOM (§7.7) from the saved φ and masks
      populations = tmp_path / "out" / "populations"
      forgot = np.load(populations / "original.npz")["forgot"]
      t = forgot.any(axis=0)
      phi = {n: np.load(populations / f"{n}.npz")["phi_pool"][:, t] for n in ("retrain", "ft")}
      reference, other = klom.retrain_reference(phi["retrain"], forgot[:, t])
      rows = results["rows"]
      assert rows["ft"]["metrics"]["klom"]["forget"] == klom.versus(phi["ft"], reference,
                                                                    forgot[:, t])
      assert rows["retrain"]["metrics"]["klom"]["forget"] == klom.summarize(
          klom.klom(other, reference))
      assert rows["ft"]["metrics"]["klom"]["forget"]["examples"] == int(t.sum())
      assert rows["ft"]["metrics"]["klom"]["val"]["examples"] == 360
      assert "KLOM forget" in table
  again = population_runner.run_population_experiment(config)  # every chunk restored
  assert again["rows"]["ft"]["info"]["restored_chunks"] == 1
  assert again["rows"]["ft"]["metrics"]["F"] == results["rows"]["ft"]["metrics"]["F"]
  (tmp_path / "out" / "results.md").unlink()
  assert cli.main(["report", str(tmp_path / "out")]) == 0  # the CLI knows population results
  assert "| ft |" in (tmp_path / "out" / "results.md").read_text()


def test_cli_runs_a_population_config(tmp_path, data_dir, capsys):
  code = cli.main(["run", "digits_challenge:quick", f"--config.output_dir={tmp_path / 'out'}",
                   f"--config.cache_dir={tmp_path / 'c'}", f"--config.data.data_dir={data_dir}",
                   "--config.progress=False", "--config.population.models=4",
                   "--config.original.epochs=1", "--config.methods=('ga',)",
                   "--config.hparams.ga.epochs=1"])
  assert code == 0
  assert "| ga |" in capsys.readouterr().out
  assert json.loads((tmp_path / "out" / "results.json").read_text())["protocol"] == "challenge"
  command = summaries.read_summary(tmp_path / "out" / "summary.json")["command"]
  assert command.startswith("unlearn-jax run digits_challenge:quick --config.output_dir=")
