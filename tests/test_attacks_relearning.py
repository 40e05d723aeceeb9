"""Few-shot relearning: the curve's start, the step count, the budget, seeding and bad inputs."""

import dataclasses

import numpy as np
import pytest

from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.evaluation.outputs import accuracy
from unlearn_jax.evaluation.relearning import relearn_time


@pytest.fixture(scope="module")
def class0(digits_class0):
  return digits_class0


@pytest.fixture(scope="module")
def ga_unlearned(digits_model, digits_original, class0, digits_ga):
  return digits_ga


def test_original_needs_no_step(digits_model, digits_original, class0):
  result = relearn_time(digits_model, *digits_original, class0, seed=0, max_steps=40,
                        learning_rate=1e-3)
  assert result["steps"] == 0 and result["reached"]
  assert result["curve"][0] == accuracy(digits_model, *digits_original, class0.test_forget)
  assert len(result["curve"]) == 41


def test_unlearned_model_relearns(digits_model, ga_unlearned, class0):
  result = relearn_time(digits_model, *ga_unlearned, class0, seed=0, max_steps=40,
                        learning_rate=1e-3)
  print(f"\nGA-unlearned digits relearn class 0 from 5 shots (SGD 1e-3): "
        f"{result['steps']} steps to {result['threshold']:.0f}% on D_t^f; curve "
        f"{[round(c) for c in result['curve'][:8]]}")
  assert result["curve"][0] <= 5.0
  assert result["reached"] and 1 <= result["steps"] <= 40
  assert result["curve"][result["steps"]] >= 90.0 > max(result["curve"][:result["steps"]])
  shots = np.asarray(result["shot_index"])
  assert len(shots) == 5 and np.all(class0.forget.labels[shots] == 0)
  again = relearn_time(digits_model, *ga_unlearned, class0, seed=0, max_steps=40,
                       learning_rate=1e-3)
  assert again == result
  other = relearn_time(digits_model, *ga_unlearned, class0, seed=1, max_steps=40,
                       learning_rate=1e-3)
  assert other["shot_index"] != result["shot_index"]


def test_budget_not_reached(digits_model, ga_unlearned, class0):
  result = relearn_time(digits_model, *ga_unlearned, class0, seed=0, max_steps=40,
                        learning_rate=1e-6)
  assert not result["reached"] and result["steps"] == 40
  assert max(result["curve"]) < 90.0


def test_bad_inputs_name_the_field(digits, digits_model, digits_original, class0):
  params, state = digits_original
  with pytest.raises(ValueError, match="shots: K=200 exceeds the 142 images of class 0"):
    relearn_time(digits_model, params, state, class0, seed=0, shots=200)
  with pytest.raises(ValueError, match="eval_on: 'test'"):
    relearn_time(digits_model, params, state, class0, seed=0, eval_on="test")
  with pytest.raises(ValueError, match="threshold"):
    relearn_time(digits_model, params, state, class0, seed=0, threshold=0.0)
  random_split = make_splits(digits, ForgetSpec(fraction=0.1), seed=0)
  with pytest.raises(ValueError, match="eval_on: the test_forget set is empty"):
    relearn_time(digits_model, params, state, random_split, seed=0)
  empty = dataclasses.replace(class0, forget_idx=class0.forget_idx[:0])
  with pytest.raises(ValueError, match="splits.forget"):
    relearn_time(digits_model, params, state, empty, seed=0)
