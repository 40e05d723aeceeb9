"""MIA-efficacy, the loss attack and Avg. Gap: features against NumPy, the attacks on synthetic
data with a known answer, and SalUn's sanity check on real digits (Retrain ≈ 100, original low)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.evaluation.mia import (
    gap_to_retrain,
    loss_attack,
    mia_efficacy,
    mia_features,
    mia_metrics,
    svc_efficacy,
)
from unlearn_jax.evaluation.outputs import accuracy
from unlearn_jax.optim import Recipe
from unlearn_jax.training.classifier import train_classifier


@pytest.fixture(scope="module")
def splits(digits):
  return make_splits(digits, ForgetSpec(classes=(0,)), seed=0)


@pytest.fixture(scope="module")
def retrained(digits_model, splits):
  """A Retrain-like small CNN: trained from scratch on D_r (no class 0), another seed."""
  state, _ = train_classifier(digits_model, splits.retain, Recipe(epochs=15, batch_size=64),
                              seed=1, progress=False)
  return jax.device_get(state.params), jax.device_get(state.model_state)


def _naive_features(logits, labels):
  s = np.asarray(logits, np.float64)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  p_y = p[np.arange(len(labels)), labels]
  is_y = np.eye(s.shape[1], dtype=bool)[labels]
  m_entropy = -(1 - p_y) * np.log(p_y) - np.sum(np.where(is_y, 0.0, p * np.log1p(-p)), -1)
  return {"confidence": p_y, "entropy": -np.sum(p * np.log(p), -1), "m_entropy": m_entropy,
          "loss": -np.log(p_y)}


def test_features_match_numpy():
  rng = np.random.default_rng(0)
  logits = (6.0 * rng.normal(size=(200, 10))).astype(np.float32)
  labels = rng.integers(0, 10, 200).astype(np.int32)
  ours = jax.jit(mia_features)(logits, labels)
  for name, expected in _naive_features(logits, labels).items():
    np.testing.assert_allclose(np.asarray(ours[name]), expected, rtol=2e-4, atol=1e-5,
                               err_msg=name)


def test_modified_entropy_is_exact_for_saturated_softmax():
  # p_0 = 1 − 9e−40 rounds to 1 in float32, so a naive log(1 − p_0) would be −inf.
  logits = jnp.array([[40.0] + [0.0] * 9] * 2)
  out = jax.jit(mia_features)(logits, jnp.array([0, 1]))
  np.testing.assert_allclose(np.asarray(out["m_entropy"]), [0.0, 80.0 - np.log(9.0)], atol=1e-3)
  assert np.all(np.isfinite(np.asarray(out["m_entropy"])))


def test_svc_efficacy_known_answers():
  rng = np.random.default_rng(0)
  member = rng.uniform(0.9, 1.0, 300)  # confident on training data
  nonmember = rng.uniform(0.0, 0.6, 300)
  assert svc_efficacy(member, nonmember, rng.uniform(0.0, 0.3, 50)) == 100.0
  assert svc_efficacy(member, nonmember, rng.uniform(0.95, 1.0, 50)) == 0.0


def test_loss_attack_separates_and_is_at_chance_without_signal():
  rng = np.random.default_rng(0)
  strong = loss_attack(rng.uniform(1e-4, 1e-3, 100), rng.uniform(0.1, 3.0, 80), seed=0)
  assert strong["accuracy"] > 95 and strong["auc"] > 0.99
  null = loss_attack(rng.exponential(1.0, 300), rng.exponential(1.0, 300), seed=0)
  assert 40 < null["accuracy"] < 60 and 0.4 < null["auc"] < 0.6
  members, nonmembers = rng.exponential(1.0, 50), rng.exponential(2.0, 70)
  assert loss_attack(members, nonmembers, seed=3) == loss_attack(members, nonmembers, seed=3)


def test_mia_on_real_digits_retrain_high_original_low(digits_model, digits_original, retrained,
                                                      splits):
  original = mia_metrics(digits_model, *digits_original, splits)
  retrain = mia_metrics(digits_model, *retrained, splits)
  print(f"\nMIA digits class 0: original {original}\nretrain {retrain}")
  assert set(original) == {"MIA", "MIA/entropy", "MIA/m_entropy", "loss_attack/accuracy",
                           "loss_attack/auc"}
  assert retrain["MIA"] >= 80 and retrain["MIA/m_entropy"] >= 80
  assert original["MIA"] <= 20 and original["MIA/m_entropy"] <= 20
  for result in (original, retrain):
    assert all(isinstance(v, float) for v in result.values())
    assert 0 <= result["loss_attack/auc"] <= 1


def test_gap_to_retrain_on_real_digits(digits_model, digits_original, retrained, splits):
  def metrics(params_state):
    return {"UA": 100 - accuracy(digits_model, *params_state, splits.forget),
            "RA": accuracy(digits_model, *params_state, splits.retain),
            "TA": accuracy(digits_model, *params_state, splits.test_retain),
            "MIA": mia_metrics(digits_model, *params_state, splits)["MIA"]}

  original, retrain = metrics(digits_original), metrics(retrained)
  assert gap_to_retrain(retrain, retrain) == 0.0
  # UA (0 vs 100) and MIA (low vs high) alone put the original ≥ 40 points away on average.
  assert gap_to_retrain(original, retrain) >= 40


def test_gap_to_retrain_known_value():
  a = {"UA": 10.0, "RA": 90.0, "TA": 80.0, "MIA": 50.0, "other": 1e9}
  b = {"UA": 14.0, "RA": 88.0, "TA": 80.0, "MIA": 40.0}
  assert gap_to_retrain(a, b) == pytest.approx(4.0)


def test_mia_efficacy_reports_each_feature():
  rng = np.random.default_rng(0)
  confident = np.tile(np.array([[8.0] + [0.0] * 9], np.float32), (40, 1))
  unsure = rng.normal(0.0, 0.3, (40, 10)).astype(np.float32)
  zeros = np.zeros(40, np.int32)
  out = mia_efficacy(confident, zeros, unsure, zeros, unsure[:10], zeros[:10])
  assert set(out) == {"confidence", "entropy", "m_entropy"}
  assert out["confidence"] == 100.0


def test_bad_inputs_name_the_field():
  with pytest.raises(ValueError, match="logits"):
    mia_features(jnp.zeros(5), jnp.zeros(5, jnp.int32))
  with pytest.raises(ValueError, match="labels"):
    mia_features(jnp.zeros((5, 3)), jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match="target"):
    svc_efficacy(np.ones(3), np.zeros(3), np.array([]))
  with pytest.raises(ValueError, match="nonmember"):
    svc_efficacy(np.ones(3), np.array([0.0, np.nan]), np.ones(2))
  with pytest.raises(ValueError, match="member_labels"):
    mia_efficacy(np.zeros((0, 3)), np.zeros(0, np.int32), np.zeros((2, 3)), np.zeros(2, np.int32),
                 np.zeros((2, 3)), np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="target_labels"):
    mia_efficacy(np.zeros((2, 3)), np.zeros(2, np.int32), np.zeros((2, 3)), np.zeros(2, np.int32),
                 np.zeros((2, 3)), np.zeros(3, np.int32))
  with pytest.raises(ValueError, match="repeats"):
    loss_attack(np.ones(5), np.ones(5), seed=0, repeats=0)
  with pytest.raises(ValueError, match="member_losses"):
    loss_attack(np.ones(1), np.ones(5), seed=0)
  with pytest.raises(ValueError, match="retrain_metrics"):
    gap_to_retrain({"UA": 1, "RA": 1, "TA": 1, "MIA": 1}, {"UA": 1})
