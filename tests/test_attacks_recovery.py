"""FM / HR / HR with labels / HeadSwap recovery: the ridge solve, HR's probability targets
against NumPy, HR on logits equal to FM and HR on probabilities not, the identity case, one-point
contraction, and recovery of a gradient-ascent-unlearned digits model."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.evaluation.inversion import parameter_gradient
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.evaluation.recovery import (
  class_balance,
  fit_label_head,
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


def test_weighted_ridge_matches_numpy():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(40, 5)).astype(np.float32)
  t = rng.normal(size=(40, 3)).astype(np.float32)
  w = rng.uniform(0.1, 3.0, size=40).astype(np.float32)
  zh = np.concatenate([z, np.ones((40, 1), np.float32)], 1).astype(np.float64)
  gram = zh.T @ (w[:, None] * zh)
  ref = np.linalg.solve(gram + 0.01 * np.trace(gram) / 6 * np.eye(6), zh.T @ (w[:, None] * t))
  np.testing.assert_allclose(ridge_fit(jnp.asarray(z), jnp.asarray(t), gamma_scale=0.01,
                                       weights=jnp.asarray(w)), ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(ridge_fit(z, t, weights=np.ones(40, np.float32)), ridge_fit(z, t),
                             rtol=1e-5, atol=1e-6)


def test_hr_regresses_probabilities_like_naive_numpy():
  """HR's V* = (ẐᵀẐ + γI)⁻¹ Ẑᵀ softmax(S_o), in float64 NumPy."""
  rng = np.random.default_rng(2)
  z_u = rng.normal(size=(60, 4)).astype(np.float32)
  z_o = rng.normal(size=(60, 6)).astype(np.float32)
  logits = (3.0 * rng.normal(size=(60, 5))).astype(np.float32)
  fits = jax.jit(fit_recovery, static_argnames=("gamma_scale", "hr_target"))(
      z_u, z_o, logits, gamma_scale=0.05, hr_target="probs")
  s = logits.astype(np.float64)
  probs = np.exp(s - s.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  zh = np.concatenate([z_u, np.ones((60, 1))], 1).astype(np.float64)
  gram = zh.T @ zh
  ref = np.linalg.solve(gram + 0.05 * np.trace(gram) / 5 * np.eye(5), zh.T @ probs)
  np.testing.assert_allclose(fits["hr"], ref, rtol=1e-4, atol=1e-5)
  # The regressed probabilities of each row sum to 1 (Σ_k P_k = 1 is in the span of the ones
  # column, exactly so without the ridge).
  exact = fit_recovery(z_u, z_o, logits, gamma_scale=0.0)
  np.testing.assert_allclose(ridge_predict(exact["hr"], z_u).sum(-1), 1.0, atol=1e-4)
  with pytest.raises(ValueError, match="hr_target: 'softmax'"):
    fit_recovery(z_u, z_o, logits, hr_target="softmax")


def test_hr_on_logits_is_fm_for_a_linear_head():
  """Ridge is linear in its targets and S_o = Z_o H + b: HR on logits gives FM's logits (γ = 0)."""
  rng = np.random.default_rng(3)
  z_u, z_o = rng.normal(size=(2, 80, 6)).astype(np.float32)
  head = {"head": {"kernel": rng.normal(size=(6, 4)).astype(np.float32),
                   "bias": rng.normal(size=4).astype(np.float32)}}
  logits = np.asarray(z_o @ head["head"]["kernel"] + head["head"]["bias"])
  fits = fit_recovery(z_u, z_o, logits, gamma_scale=0.0, hr_target="logits")
  test = rng.normal(size=(200, 6)).astype(np.float32)
  recovered = recovered_logits(fits, head, test)
  np.testing.assert_allclose(recovered["hr"], recovered["fm"], rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(np.argmax(recovered["hr"], -1), np.argmax(recovered["fm"], -1))


def test_softmax_makes_hr_differ_from_fm():
  """θ_u = θ_o with 1-D features and logits (−5z, 1, 5z): class 1 wins on |z| < 0.2. FM maps z to
  itself and predicts like θ_o; the best affine fit of the probabilities cannot follow the bump of
  p_1 (an even function of z, so its fit is flat, about its mean 0.23), and near 0 HR predicts the
  class whose fitted probability rises with z instead."""
  z = np.linspace(-1.0, 1.0, 201, dtype=np.float32)[:, None]
  head = {"head": {"kernel": np.array([[-5.0, 0.0, 5.0]], np.float32),
                   "bias": np.array([0.0, 1.0, 0.0], np.float32)}}
  logits = z @ head["head"]["kernel"] + head["head"]["bias"]
  fits = fit_recovery(z, z, logits, gamma_scale=0.0)
  near_zero = np.array([[0.05], [-0.05], [0.1]], np.float32)
  recovered = recovered_logits(fits, head, near_zero)
  np.testing.assert_array_equal(np.argmax(recovered["fm"], -1), [1, 1, 1])  # θ_o's classes
  np.testing.assert_array_equal(np.argmax(recovered["hr"], -1), [2, 0, 2])
  logits_fit = fit_recovery(z, z, logits, gamma_scale=0.0, hr_target="logits")
  np.testing.assert_array_equal(
      np.argmax(recovered_logits(logits_fit, head, near_zero)["hr"], -1), [1, 1, 1])


def test_hr_on_the_originals_own_features_recovers_its_accuracy(digits, digits_model,
                                                                digits_original, class0):
  """Property: θ_u = θ_o and a calibration set of every class (the test split) — HR on
  probabilities predicts like θ_o, so it keeps θ_o's accuracy on D_f and D_r."""
  z_cal, logits_cal = model_outputs(digits_model, *digits_original, digits.test)
  fits = fit_recovery(z_cal, z_cal, logits_cal)
  for name in ("forget", "retain"):
    data = getattr(class0, name)
    z, logits = model_outputs(digits_model, *digits_original, data)
    hr = np.argmax(recovered_logits(fits, digits_original[0], z)["hr"], -1)
    original = np.argmax(logits, -1)
    assert np.mean(hr == original) >= 0.98, name
    assert abs(np.mean(hr == data.labels) - np.mean(original == data.labels)) <= 0.01, name


def test_identity_unlearning_recovers_identity_map(digits_original, original_outputs):
  """θ_u = θ_o: W* ≈ I on the features active on S_cal, FM, HeadSwap and HR on logits predict like
  θ_o everywhere, HR on probabilities like θ_o on the kept classes."""
  z_cal, logits_cal = original_outputs["calibration"]
  fits = fit_recovery(z_cal, z_cal, logits_cal, gamma_scale=1e-7)
  logit_fits = fit_recovery(z_cal, z_cal, logits_cal, gamma_scale=1e-7, hr_target="logits")
  active = z_cal.max(axis=0) > 0
  assert active.sum() > 32
  w = np.asarray(fits["fm"])
  np.testing.assert_allclose(w[:-1][np.ix_(active, active)], np.eye(active.sum()), atol=1e-2)
  np.testing.assert_allclose(w[-1], 0.0, atol=1e-2)
  for name in ("forget", "test_forget", "retain"):
    z, logits = original_outputs[name]
    recovered = recovered_logits(fits, digits_original[0], z)
    np.testing.assert_allclose(recovered["head_swap"], logits, rtol=1e-5, atol=1e-5)
    scores = {**recovered, "hr_logits": recovered_logits(logit_fits, digits_original[0], z)["hr"]}
    attacks = ("fm", "hr_logits", "head_swap") + (("hr",) if name == "retain" else ())
    for attack in attacks:
      agree = np.mean(np.argmax(scores[attack], -1) == np.argmax(logits, -1))
      assert agree >= (0.95 if attack == "hr" else 1.0), (attack, name)


def test_identity_unlearning_keeps_original_accuracy(digits_model, digits_original, class0):
  """θ_u = θ_o: FM, HR on logits and HR with labels keep θ_o's accuracies. HR on probabilities
  keeps the kept classes but, from a calibration set without the forget class, cannot predict it
  (θ_o gives it ≈ 0 probability on every kept image: measured 0 % on D_f)."""
  result = recovery_attack(digits_model, *digits_original, class0, original=digits_original)
  logits = recovery_attack(digits_model, *digits_original, class0, original=digits_original,
                           hr_target="logits")
  assert result["head_swap"] == result["unlearned"]
  assert result["hr_target"] == "probs" and logits["hr_target"] == "logits"
  for attack, accuracies in (("fm", result["fm"]), ("hr_logits", logits["hr"]),
                             ("hr_labels", result["hr_labels"])):
    for name, acc in accuracies.items():
      assert abs(acc - result["unlearned"][name]) <= 1.5, (attack, name)
  print(f"\nθ_u = θ_o, HR on probabilities: D_f {result['hr']['forget']:.1f} %, D_t^f "
        f"{result['hr']['test_forget']:.1f} %, held-out D_t^r {result['hr']['retain']:.1f} %")
  assert abs(result["hr"]["retain"] - result["unlearned"]["retain"]) <= 1.5
  assert result["hr"]["forget"] <= 5.0
  assert result["calibration_size"] == len(class0.calibration)


def test_label_shots_are_seeded_forget_images(digits_model, digits_original, class0):
  result = recovery_attack(digits_model, *digits_original, class0, original=digits_original,
                           label_shots=3, seed=4)
  again = recovery_attack(digits_model, *digits_original, class0, original=digits_original,
                          label_shots=3, seed=4)
  other = recovery_attack(digits_model, *digits_original, class0, original=digits_original,
                          label_shots=3, seed=5)
  positions = result["label_shot_positions"]
  assert result["label_shots"] == 3 and len(positions) == len(set(positions)) == 3
  assert np.all(class0.forget.labels[positions] == 0)
  assert positions == again["label_shot_positions"] != other["label_shot_positions"]
  with pytest.raises(ValueError, match=r"label_shots: K=1000 exceeds the \d+ images of class 0"):
    recovery_attack(digits_model, *digits_original, class0, original=digits_original,
                    label_shots=1000)


def test_label_head_is_a_balanced_one_hot_ridge():
  rng = np.random.default_rng(5)
  labels = np.array([0] * 30 + [1] * 30 + [2] * 2, np.int32)
  weights = np.asarray(class_balance(jnp.asarray(labels), 4))
  np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-6)
  np.testing.assert_allclose([weights[labels == c].sum() for c in range(3)], [62 / 3] * 3,
                             rtol=1e-5)
  z = rng.normal(size=(62, 5)).astype(np.float32)
  expected = ridge_fit(z, np.eye(4, dtype=np.float32)[labels], weights=weights)
  np.testing.assert_allclose(fit_label_head(z, labels, 4), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fit_label_head(z, labels, 4, balanced=False),
                             ridge_fit(z, np.eye(4, dtype=np.float32)[labels]), rtol=1e-5,
                             atol=1e-6)


def test_one_point_contraction_defeats_recovery(digits_model, digits_original, original_outputs,
                                                class0):
  """f(θ_u, x) = 0 on D_f: the head-kernel gradient is exactly 0 and FM/HR predict one class."""
  z_cal, logits_cal = original_outputs["calibration"]
  fits = fit_recovery(z_cal, z_cal, logits_cal)
  fits["hr_labels"] = fit_label_head(z_cal, class0.calibration.labels, 10)
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
  assert all(result[a]["forget"] in (0.0, 100.0) for a in ("fm", "hr", "hr_labels", "head_swap"))


def test_recovers_gradient_ascent_on_digits(digits_model, digits_original, class0, digits_ga):
  unlearned = digits_ga
  result = recovery_attack(digits_model, *unlearned, class0, original=digits_original)
  print(f"\nGA-unlearned digits: Acc(D_f) {result['unlearned']['forget']:.1f}% → FM "
        f"{result['fm']['forget']:.1f}% (D_t^f {result['fm']['test_forget']:.1f}%), HR "
        f"{result['hr']['forget']:.1f}%, HR with {result['label_shots']} labels "
        f"{result['hr_labels']['forget']:.1f}% (D_t^f {result['hr_labels']['test_forget']:.1f}%), "
        f"HeadSwap {result['head_swap']['forget']:.1f}%; FM retain {result['fm']['retain']:.1f}%")
  assert result["unlearned"]["forget"] <= 5.0
  for attack in ("fm", "hr_labels"):
    assert result[attack]["forget"] >= 50.0 and result[attack]["test_forget"] >= 50.0
    assert result[attack]["retain"] >= 90.0
  assert result["hr"]["retain"] >= 90.0


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
