"""Weight-space predictors: ‖θ_u − θ_o‖ and the barrier against naive NumPy, the segment's
endpoints and interior against the models themselves (real digits), and bad inputs."""

import jax
import numpy as np
import pytest

from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import accuracy, model_outputs
from unlearn_jax.evaluation.weight_space import (
  barrier,
  interpolate,
  lmc_sets,
  parameter_distance,
  segment,
)


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)]).astype(np.float64)


def test_distance_matches_numpy(digits_ga, digits_original):
  d = parameter_distance(digits_ga[0], digits_original[0])
  diff = _flat(digits_ga[0]) - _flat(digits_original[0])
  np.testing.assert_allclose(d["l2"], np.linalg.norm(diff), rtol=1e-5)
  np.testing.assert_allclose(d["relative"], np.linalg.norm(diff)
                             / np.linalg.norm(_flat(digits_original[0])), rtol=1e-5)
  assert parameter_distance(digits_original[0], digits_original[0])["l2"] == 0.0


def test_barrier_matches_a_loop():
  rng = np.random.default_rng(0)
  for _ in range(20):
    values = rng.uniform(0, 100, size=7)
    line = [values[0] + k / 6 * (values[-1] - values[0]) for k in range(7)]
    drops = [line[k] - values[k] for k in range(7)]
    assert barrier(values, higher_is_better=True) == pytest.approx(max(0.0, max(drops)))
    assert barrier(values, higher_is_better=False) == pytest.approx(max(0.0, -min(drops)))
  assert barrier([1.0, 2.0, 3.0], higher_is_better=True) == 0.0


def test_interpolate_mixes_parameters_and_batch_norm_statistics():
  start = {"params": {"w": np.array([0.0, 2.0])}, "stats": {"mean": np.array([1.0])}}
  end = {"params": {"w": np.array([4.0, 2.0])}, "stats": {"mean": np.array([3.0])}}
  mid = interpolate(start, end, 0.25)
  np.testing.assert_allclose(mid["params"]["w"], [1.0, 2.0])
  np.testing.assert_allclose(mid["stats"]["mean"], [1.5])


def test_segment_endpoints_are_the_two_models(digits_model, digits_original, digits_ga,
                                              digits_class0):
  sets = lmc_sets(digits_class0, max_examples=200, seed=0)
  assert {n: len(s) for n, s in sets.items()} == {"forget": 142, "retain": 200, "test": 200}
  curves = segment(digits_model, digits_original, digits_ga, sets, points=5)
  assert curves["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
  for end, model in ((0, digits_original), (-1, digits_ga)):
    for name, data in sets.items():
      assert curves[name]["accuracy"][end] == accuracy(digits_model, *model, data)
      logits = model_outputs(digits_model, *model, data)[1].astype(np.float64)
      log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
      np.testing.assert_allclose(curves[name]["loss"][end],
                                 -log_p[np.arange(len(data)), data.labels].mean(), rtol=1e-5)
  mid = jax.tree.map(lambda a, b: 0.5 * (np.asarray(a) + np.asarray(b)), digits_original[0],
                     digits_ga[0])
  assert curves["forget"]["accuracy"][2] == accuracy(digits_model, mid, {}, sets["forget"])


def test_bad_inputs_name_the_field(digits_model, digits_original, digits_class0):
  sets = lmc_sets(digits_class0, max_examples=10, seed=0)
  with pytest.raises(ValueError, match="points: 1"):
    segment(digits_model, digits_original, digits_original, sets, points=1)
  with pytest.raises(ValueError, match=r"sets\['forget'\]: empty"):
    segment(digits_model, digits_original, digits_original,
            {"forget": digits_class0.forget.subset(np.arange(0))})
  with pytest.raises(ValueError, match=r"config\.evaluation\.weight_space\.points: 4"):
    registry.resolve({"weight_space": {"points": 4}})
  with pytest.raises(ValueError, match="params: its structure"):
    parameter_distance({"w": np.zeros(2)}, {"w": np.zeros(3)})
