"""Representation metrics: CKA, alignments and residual geometry on constructed features with a
known answer, collapsed (OPC-like) features, probes and per-layer CKA on the real digits model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.evaluation.probes import (
    knn_accuracy,
    linear_probe_accuracy,
    norm_detectability,
    recoverability,
    stage_cka,
)
from unlearn_jax.evaluation.representation import (
    align,
    class_mean_angle,
    concentration,
    cosine_distance,
    effective_rank,
    feature_sets,
    fit_procrustes,
    fit_ridge,
    linear_cka,
    noise_floor,
    principal_directions,
    relative_residual,
    retrain_consistency,
    subspace_overlap,
)

D = 16


@pytest.fixture(scope="module")
def splits(digits):
  return make_splits(digits, ForgetSpec(classes=(0,)), seed=0)


@pytest.fixture(scope="module")
def collapsed(digits_original):
  """θ_o with its penultimate layer zeroed: every feature is 0 (one-point contraction)."""
  params, state = digits_original
  dense = jax.tree.map(np.zeros_like, params["dense"])
  return dict(params, dense=dense), state


def _features(seed, n, d=D):
  """Anisotropic Gaussian features with a non-zero mean."""
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)) * np.linspace(3.0, 0.3, d) + 1.0).astype(np.float32)


def _rotation(seed, d=D):
  return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0].astype(np.float32)


def _suite(seed, transform=lambda x: x):
  """Named sets of features and their transform (the "unlearned" view of the same inputs)."""
  reference = {name: _features(seed + i, n) for i, (name, n) in
               enumerate((("calibration", 60), ("forget", 40), ("retain", 80)))}
  return {k: transform(v) for k, v in reference.items()}, reference


def _naive_cka(x, y):
  n = len(x)
  h = np.eye(n) - np.ones((n, n)) / n
  k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
  return np.sum(k * l) / (np.linalg.norm(k) * np.linalg.norm(l))


@pytest.mark.parametrize("n", [10, 100])  # Gram form (n < d1 + d2) and feature form
def test_cka_matches_kernel_form_and_is_invariant(n):
  x, y = _features(0, n), _features(1, n)
  cka = jax.jit(linear_cka)
  np.testing.assert_allclose(float(cka(x, y)), _naive_cka(x.astype(np.float64), y), atol=1e-5)
  np.testing.assert_allclose(float(cka(x, x)), 1.0, atol=1e-5)
  np.testing.assert_allclose(float(cka(x, x @ _rotation(2))), 1.0, atol=1e-5)
  np.testing.assert_allclose(float(cka(x, 7.0 * x + 3.0)), 1.0, atol=1e-5)


def test_cka_of_collapsed_features_is_zero_not_nan():
  x = _features(0, 50)
  constant = np.full((50, D), 123.456, np.float32)  # the float32 mean is not exactly 123.456
  for a, b in ((x, constant), (constant, x), (np.zeros_like(x), x), (constant, constant)):
    assert float(linear_cka(a, b)) == 0.0


def test_procrustes_recovers_a_rotation_and_ridge_a_linear_map():
  u = _features(0, 200)
  q = _rotation(3)
  shift = np.linspace(-1, 1, D).astype(np.float32)[None, :]
  r = u @ q + shift
  for alignment in (fit_procrustes(u, r), fit_ridge(u, r, ridge=0.0)):
    assert float(jnp.max(relative_residual(align(alignment, u), r))) < 1e-4
  np.testing.assert_allclose(np.asarray(fit_procrustes(u, r).matrix), q, atol=1e-4)
  scaled = fit_procrustes(u, 2.5 * (u @ q), scale=True)
  assert float(jnp.max(relative_residual(align(scaled, u), 2.5 * (u @ q)))) < 1e-4
  general = u @ np.random.default_rng(4).normal(size=(D, 8)).astype(np.float32)
  assert float(jnp.max(relative_residual(align(fit_ridge(u, general, ridge=0.0), u),
                                         general))) < 1e-3


def test_residual_and_cosine_known_values():
  r = jnp.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
  a = jnp.array([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
  np.testing.assert_allclose(np.asarray(relative_residual(a, r))[:2], [0.0, np.sqrt(2.0)],
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(cosine_distance(a, r)), [0.0, 1.0, 1.0], atol=1e-6)
  assert np.all(np.isfinite(np.asarray(relative_residual(a, r))))


def test_concentration_top_k_versus_isotropic():
  scales = np.array([10.0, 6.0, 4.0] + [1.0] * (D - 3), np.float32)
  reference = np.random.default_rng(0).normal(size=(500, D)).astype(np.float32) * scales + 2.0
  k = 3
  directions = principal_directions(reference, k)
  np.testing.assert_allclose(np.asarray(directions @ directions.T), np.eye(k), atol=1e-5)
  # The leading principal axes are the first coordinates, in order.
  np.testing.assert_allclose(np.abs(np.asarray(directions)), np.eye(k, D), atol=0.1)
  coefficients = np.random.default_rng(1).normal(size=(500, k)).astype(np.float32)
  inside = coefficients @ np.asarray(directions)
  np.testing.assert_allclose(float(concentration(inside, directions)), 1.0, atol=1e-5)
  noise = np.random.default_rng(2).normal(size=(4000, D)).astype(np.float32)
  np.testing.assert_allclose(float(concentration(noise, directions)), k / D, atol=0.02)
  assert float(concentration(np.zeros((5, D), np.float32), directions)) == 0.0


def test_effective_rank_and_subspace_overlap():
  noise = np.random.default_rng(0).normal(size=(4000, D)).astype(np.float32)
  assert D - 0.5 < float(effective_rank(noise)) <= D
  line = np.outer(np.arange(100.0), np.ones(D)).astype(np.float32)
  np.testing.assert_allclose(float(effective_rank(line)), 1.0, atol=1e-3)
  assert float(effective_rank(np.zeros((10, D), np.float32))) == 0.0
  x = _features(0, 300)
  np.testing.assert_allclose(float(subspace_overlap(x, x @ np.eye(D, dtype=np.float32), 4)),
                             1.0, atol=1e-5)
  first, last = np.zeros((300, D), np.float32), np.zeros((300, D), np.float32)
  first[:, :4], last[:, -4:] = x[:, :4], x[:, -4:]
  np.testing.assert_allclose(float(subspace_overlap(first, last, 4)), 0.0, atol=1e-5)


def test_class_mean_angle():
  x = _features(0, 60) + 5.0
  labels = jnp.arange(60) % 3
  np.testing.assert_allclose(float(class_mean_angle(x, x, labels, 5)), 0.0, atol=0.1)
  np.testing.assert_allclose(float(class_mean_angle(x, -x, labels, 5)), 180.0, atol=0.1)


def test_retrain_consistency_of_a_rotated_copy():
  q = _rotation(5)
  unlearned, reference = _suite(0, lambda x: x @ q)
  labels = {name: np.arange(len(v)) % 4 for name, v in reference.items()}
  out = retrain_consistency(unlearned, reference, labels=labels, k=4)
  assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())
  for name in ("forget", "retain"):
    assert out[f"{name}/cka"] == pytest.approx(1.0, abs=1e-5)
    assert out[f"{name}/rc/procrustes"] < 1e-4 and out[f"{name}/rc/ridge"] < 1e-2  # ridge shrinks
    assert out[f"{name}/class_angle/procrustes"] < 0.1
    assert out[f"{name}/rho_baseline"] == 4 / D
  assert out["asym/cka"] == pytest.approx(0.0, abs=1e-5)
  assert {"asym/rc/procrustes", "asym/rc/ridge"} <= set(out)
  assert "calibration/cka" not in out


def test_retrain_consistency_of_collapsed_forget_features():
  unlearned, reference = _suite(0)
  unlearned["forget"] = np.zeros_like(unlearned["forget"])  # OPC: forget features at 0
  out = retrain_consistency(unlearned, reference, k=4)
  assert all(np.isfinite(v) for v in out.values())
  assert out["forget/cka"] == 0.0 and out["retain/cka"] == pytest.approx(1.0, abs=1e-5)
  assert out["forget/rc/procrustes"] > 0.5 and out["retain/rc/procrustes"] < 1e-4
  assert out["asym/rc/procrustes"] < 0  # the forget set is the one that moved away


def test_noise_floor_over_seed_pairs():
  seeds = [_suite(0, lambda x, s=s: x @ _rotation(s) + 0.1 * s)[0] for s in range(3)]
  out = noise_floor(seeds, k=4)
  assert out["forget/cka/mean"] == pytest.approx(1.0, abs=1e-5)
  assert out["forget/cka/std"] < 1e-5
  assert {"retain/rc/ridge/mean", "retain/rc/ridge/std"} <= set(out)
  with pytest.raises(ValueError, match="references"):
    noise_floor(seeds[:1])


def test_retrain_consistency_on_real_digits(digits_model, digits_original, collapsed, splits):
  sets = ("forget", "retain", "calibration")
  original, labels = feature_sets(digits_model, *digits_original, splits, sets=sets,
                                  max_examples=100)
  same = retrain_consistency(original, original, labels=labels)
  assert same["forget/cka"] == pytest.approx(1.0, abs=1e-4)
  assert same["retain/rc/procrustes"] < 1e-3 and same["forget/rc/ridge"] < 0.1  # ridge shrinks
  zero, _ = feature_sets(digits_model, *collapsed, splits, sets=sets, max_examples=100)
  against = retrain_consistency(zero, original, labels=labels)
  assert all(np.isfinite(v) for v in against.values())
  assert against["forget/cka"] == 0.0 and against["forget/rc/procrustes"] > 0.5


def test_probes_and_knn_on_clusters():
  rng = np.random.default_rng(0)
  centres = 5.0 * rng.normal(size=(4, D))
  labels = np.repeat(np.arange(4), 50)
  x = (centres[labels] + rng.normal(size=(200, D))).astype(np.float32)
  y = (centres[labels] + rng.normal(size=(200, D))).astype(np.float32)
  assert linear_probe_accuracy(x, labels, y, labels) > 95
  assert knn_accuracy(x, labels, y, labels, k=20) > 95
  shuffled = rng.permutation(labels)
  assert knn_accuracy(x, shuffled, y, labels, k=20) < 50
  with pytest.raises(ValueError, match="k"):
    knn_accuracy(x, labels, y, labels, k=201)
  with pytest.raises(ValueError, match="eval_features"):
    linear_probe_accuracy(x, labels, y[:, :3], labels)


def test_norm_detectability():
  kept = _features(0, 100)
  assert norm_detectability(0.1 * _features(1, 50), kept) == 1.0
  assert norm_detectability(10.0 * _features(1, 50), kept) == 0.0
  assert norm_detectability(np.zeros((5, D)), np.zeros((5, D))) == 0.5
  assert 0.35 < norm_detectability(_features(1, 400), _features(2, 400)) < 0.65
  with pytest.raises(ValueError, match="forget_features"):
    norm_detectability(np.zeros((0, D)), kept)


def test_recoverability_on_real_digits(digits_model, digits_original, collapsed, splits):
  out = recoverability(digits_model, *digits_original, splits)
  print(f"\nrecoverability of the digits original: {out}")
  assert out["probe/forget"] >= 90 and out["knn/forget"] >= 90
  assert 0 <= out["norm_auroc"] <= 1
  zero = recoverability(digits_model, *collapsed, splits)
  assert zero["feature_norm/forget"] == 0.0 and zero["norm_auroc"] == 0.5
  assert all(np.isfinite(v) for v in zero.values())


def test_stage_cka_on_real_digits(digits_model, digits_original, collapsed, splits):
  same = stage_cka(digits_model, digits_original, digits_original, splits.forget)
  assert list(same)[-1] == "cka/penultimate" and len(same) == 3
  assert all(v == pytest.approx(1.0, abs=1e-4) for v in same.values())
  against = stage_cka(digits_model, digits_original, collapsed, splits.forget)
  assert against["cka/penultimate"] == 0.0 and against["cka/block1"] == pytest.approx(1.0, 1e-4)


@pytest.mark.parametrize("call, field", [
    (lambda: linear_cka(np.zeros((5, 3)), np.zeros((4, 3))), "x/y"),
    (lambda: fit_procrustes(np.zeros((0, 3)), np.zeros((0, 3))), "source"),
    (lambda: fit_ridge(np.ones((5, 3)), np.ones((5, 3)), ridge=-1.0), "ridge"),
    (lambda: principal_directions(np.ones((5, 3)), 4), "k"),
    (lambda: concentration(np.ones((5, 3)), np.ones((2, 4))), "directions"),
    (lambda: subspace_overlap(np.ones((5, 3)), np.ones((5, 4)), 1), "x/y"),
    (lambda: retrain_consistency({"forget": np.ones((5, 3))}, {"forget": np.ones((5, 3))}),
     "calibration"),
    (lambda: retrain_consistency(*_suite(0), k=0), "k"),
])
def test_bad_inputs_name_the_field(call, field):
  with pytest.raises(ValueError, match=field):
    call()
