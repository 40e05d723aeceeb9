"""FM / HR / HeadSwap recovery: the ridge solve, the identity case, one-point contraction, and
recovery of a gradient-ascent-unlearned digits model."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.evaluation.inversion import parameter_gradient
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.evaluation.recovery import (
  fit_recovery,
  recovered_logits,
  recovery_attack,
  ridge_fit,
  ridge_predict,
)
from unlearn_jax.models import make_model


@pytest.fixture(scope="module")
def class0(digits_class0):
  return digits_class0


@pytest.fixture(scope="module")
def original_outputs(digits_model, digits_original, class0):
  """θ_o's (features, logits) on the calibration set and on D_f, D_t^f, held-out D_t^r."""
  sets = {"calibration": class0.calibration, "forget": class0.forget,
          "test_forget": class0.test_forget, "retain": class0.test_heldout}
  return {name: model_outputs(digits_model, *digits_original, d) for name, d in sets.items()}


def test_ridge_matches_numpy_least_squares():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(50, 6)).astype(np.float32)
  a, b = rng.normal(size=(6, 3)), rng.normal(size=(1, 3))
  t = (z @ a + b).astype(np.float32)
  w = ridge_fit(jnp.asarray(z), jnp.asarray(t), gamma_scale=0.0)
  np.testing.assert_allclose(w, np.concatenate([a, b]), atol=1e-4)
  gamma = 0.1
  zh = np.concatenate([z, np.ones((50, 1), np.float32)], 1).astype(np.float64)
  ref = np.linalg.solve(zh.T @ zh + gamma * np.trace(zh.T @ zh) / 7 * np.eye(7), zh.T @ t)
  np.testing.assert_allclose(ridge_fit(jnp.asarray(z), jnp.asarray(t), gamma_scale=gamma), ref,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ridge_predict(w, jnp.asarray(z)), t, atol=1e-4)
  jitted = jax.jit(ridge_fit, static_argnames="gamma_scale")(z, t, gamma_scale=gamma)
  np.testing.assert_allclose(jitted, ref, rtol=1e-4, atol=1e-5)


def test_identity_unlearning_recovers_identity_map(digits_original, original_outputs):
  """θ_u = θ_o: W* ≈ I on the features active on S_cal and every attack predicts like θ_o."""
  z_cal, logits_cal = original_outputs["calibration"]
  fits = fit_recovery(z_cal, z_cal, logits_cal, gamma_scale=1e-7)
  active = z_cal.max(axis=0) > 0
  assert active.sum() > 32
  w = np.asarray(fits["fm"])
  np.testing.assert_allclose(w[:-1][np.ix_(active, active)], np.eye(active.sum()), atol=1e-2)
  np.testing.assert_allclose(w[-1], 0.0, atol=1e-2)
  for name in ("forget", "test_forget", "retain"):
    z, logits = original_outputs[name]
    recovered = recovered_logits(fits, digits_original[0], z)
    np.testing.assert_allclose(recovered["head_swap"], logits, rtol=1e-5, atol=1e-5)
    for attack in ("fm", "hr", "head_swap"):
      np.testing.assert_array_equal(np.argmax(recovered[attack], -1), np.argmax(logits, -1))


def test_identity_unlearning_keeps_original_accuracy(digits_model, digits_original, class0):
  result = recovery_attack(digits_model, *digits_original, class0, original=digits_original)
  assert result["head_swap"] == result["unlearned"]
  for attack in ("fm", "hr"):
    for name, acc in result[attack].items():
      assert abs(acc - result["unlearned"][name]) <= 1.0, (attack, name)
  assert result["calibration_size"] == len(class0.calibration)


def test_one_point_contraction_defeats_recovery(digits_model, digits_original, original_outputs,
                                                class0):
  """f(θ_u, x) = 0 on D_f: the head-kernel gradient is exactly 0 and FM/HR predict one class."""
  z_cal, logits_cal = original_outputs["calibration"]
  fits = fit_recovery(z_cal, z_cal, logits_cal)
  zero = jnp.zeros((len(class0.forget), z_cal.shape[1]))
  for attack, logits in recovered_logits(fits, digits_original[0], zero).items():
    assert len(np.unique(np.argmax(logits, -1))) == 1, attack
  params = jax.tree.map(jnp.asarray, digits_original[0])
  dense = jax.tree.map(jnp.zeros_like, params["dense"])
  collapsed = {**params, "dense": dense}  # features = relu(0) = 0 for every image
  grads = parameter_gradient(digits_model, collapsed, {}, jnp.asarray(class0.forget.images[0]),
                             jnp.asarray(class0.forget.labels[0]))
  assert np.all(np.asarray(grads["head"]["kernel"]) == 0.0)
  assert np.any(np.asarray(grads["head"]["bias"]) != 0.0)  # p − e_y still reveals the label
  z_u, _ = model_outputs(digits_model, collapsed, {}, class0.forget)
  assert np.all(z_u == 0)
  fits = fit_recovery(jnp.zeros_like(z_cal), z_cal, logits_cal)
  for attack, logits in recovered_logits(fits, digits_original[0], z_u).items():
    assert len(np.unique(np.argmax(logits, -1))) == 1, attack
  result = recovery_attack(digits_model, collapsed, {}, class0, original=digits_original)
  assert all(result[a]["forget"] in (0.0, 100.0) for a in ("fm", "hr", "head_swap"))


def test_recovers_gradient_ascent_on_digits(digits_model, digits_original, class0, digits_ga):
  unlearned = digits_ga
  result = recovery_attack(digits_model, *unlearned, class0, original=digits_original)
  print(f"\nGA-unlearned digits: Acc(D_f) {result['unlearned']['forget']:.1f}% → FM "
        f"{result['fm']['forget']:.1f}% (D_t^f {result['fm']['test_forget']:.1f}%), HR "
        f"{result['hr']['forget']:.1f}%, HeadSwap {result['head_swap']['forget']:.1f}%; "
        f"FM retain {result['fm']['retain']:.1f}%")
  assert result["unlearned"]["forget"] <= 5.0
  for attack in ("fm", "hr"):
    assert result[attack]["forget"] >= 50.0 and result[attack]["test_forget"] >= 50.0
    assert result[attack]["retain"] >= 90.0


def test_bad_inputs_name_the_field(digits, digits_model, digits_original, class0):
  params, state = digits_original
  narrow = make_model("small_cnn", num_classes=digits.num_classes,
                      input_shape=digits.image_shape, mean=digits.mean, std=digits.std,
                      hidden=64)
  narrow_params, narrow_state = narrow.init(jax.random.key(0))
  with pytest.raises(ValueError, match="original_model: features × classes 64 × 10"):
    recovery_attack(digits_model, params, state, class0, original=(narrow_params, narrow_state),
                    original_model=narrow)
  with pytest.raises(ValueError, match="original: head kernel"):
    recovery_attack(digits_model, params, state, class0, original=(narrow_params, narrow_state))
  with pytest.raises(ValueError, match=r"params: no final layer"):
    recovery_attack(digits_model, {"dense": params["dense"]}, state, class0,
                    original=digits_original)
  leaky = dataclasses.replace(class0, calibration_idx=np.concatenate(
      [class0.calibration_idx, class0.test_forget_idx[:3]]))
  with pytest.raises(ValueError, match=r"splits.calibration: holds forgotten classes \[0\]"):
    recovery_attack(digits_model, params, state, leaky, original=digits_original)
  no_calibration = make_splits(digits, ForgetSpec(classes=(0,)), seed=0,
                               calibration_fraction=0.0)
  with pytest.raises(ValueError, match="splits.calibration: empty"):
    recovery_attack(digits_model, params, state, no_calibration, original=digits_original)
  no_forget = dataclasses.replace(class0, forget_idx=class0.forget_idx[:0])
  with pytest.raises(ValueError, match="splits.forget"):
    recovery_attack(digits_model, params, state, no_forget, original=digits_original)
