"""OU@ε: the per-example divergence against a NumPy reference, its bounds, and the whole metric
on perturbed sets of the real digits forget set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax import perturbations
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.evaluation import registry, suite
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.evaluation.over_unlearning import (
  EVAL_PGD,
  PIXEL_REFERENCE_PGD,
  OUSettings,
  forget_mask,
  ou_at_eps,
  ou_divergence,
  ou_metrics,
  ou_sets,
  over_unlearning,
)
from unlearn_jax.perturbations import PerturbationConfig

LN2 = float(np.log(2.0))


@pytest.fixture(scope="module")
def splits(digits):
  return make_splits(digits, ForgetSpec(classes=(0,)), seed=0)


@pytest.fixture(scope="module")
def sets(digits_model, digits_original, splits):
  return ou_sets(digits_model, *digits_original, splits.forget, jax.random.key(7))


@pytest.fixture(scope="module")
def masked_teacher(digits_original):
  """θ_o with the class-0 bias at −10⁴: its softmax is exactly θ_o's masked softmax."""
  params, state = digits_original
  bias = np.array(params["head"]["bias"])
  bias[0] = -1e4
  head = dict(params["head"], bias=bias)
  return dict(params, head=head), state


def _naive_js(original_logits, unlearned_logits, mask):
  o = np.asarray(original_logits, np.float64)
  teacher = np.where(mask, 0.0, np.exp(o - o.max(-1, keepdims=True)))
  teacher /= teacher.sum(-1, keepdims=True)
  u = np.asarray(unlearned_logits, np.float64)
  q = np.exp(u - u.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  m = (teacher + q) / 2

  def kl(p):
    return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / m), 0.0), -1)

  return 0.5 * kl(teacher) + 0.5 * kl(q)


def test_divergence_matches_numpy_and_is_bounded():
  rng = np.random.default_rng(0)
  original, unlearned = (4.0 * rng.normal(size=(2, 64, 10))).astype(np.float32)
  mask = forget_mask((0, 3), 10)
  js = np.asarray(jax.jit(ou_divergence)(original, unlearned, mask))
  np.testing.assert_allclose(js, _naive_js(original, unlearned, mask), atol=1e-5)
  assert np.all(js >= -1e-7) and np.all(js <= LN2 + 1e-6)


def test_disjoint_supports_reach_ln2():
  original = jnp.array([[0.0, 30.0, -30.0]])  # masked teacher: all mass on class 1
  unlearned = jnp.array([[0.0, -30.0, 30.0]])  # unlearned: all mass on class 2
  js = ou_divergence(original, unlearned, forget_mask((0,), 3))
  np.testing.assert_allclose(np.asarray(js), LN2, atol=1e-5)


def test_identical_models_without_forget_classes_give_zero():
  logits = (3.0 * np.random.default_rng(1).normal(size=(32, 10))).astype(np.float32)
  js = jax.jit(ou_divergence)(logits, logits, forget_mask((), 10))
  np.testing.assert_allclose(np.asarray(js), 0.0, atol=1e-6)


def test_self_comparison_is_positive_when_the_original_predicts_forget_classes():
  logits = jnp.array([[5.0, 1.0, 0.0], [2.0, 2.0, 0.0]])
  js = np.asarray(ou_divergence(logits, logits, forget_mask((0,), 3)))
  assert np.all(js > 0.05)


def test_sum_count_with_where_equals_subset_mean():
  original, unlearned = np.random.default_rng(2).normal(size=(2, 20, 5)).astype(np.float32)
  mask = forget_mask((4,), 5)
  where = np.arange(20) % 3 == 0
  total, count = jax.jit(over_unlearning)(original, unlearned, mask, where=where)
  expected = np.mean(np.asarray(ou_divergence(original[where], unlearned[where], mask)))
  assert float(count) == int(where.sum())
  np.testing.assert_allclose(float(total / count), expected, rtol=1e-5)


def test_sets_are_in_pixel_space_and_beta_filtered(splits, sets):
  assert set(sets) == {"pgd", "gaussian"}
  n = len(splits.forget)
  for data in sets.values():
    assert n // 2 <= len(data) <= n // 2 + 1  # β = median |margin|: the half nearest the boundary
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert np.all(data.labels == 0)
  # PGD moved the images, by at most ε per pixel (the filtered set is a subset of D_f's copies).
  distances = np.abs(sets["pgd"].images[:, None] - splits.forget.images[None]).max(axis=(2, 3, 4))
  assert np.all(distances.min(axis=1) <= EVAL_PGD.eps + 1e-6)
  assert np.all(distances.min(axis=1) > 0)


def test_beta_filter_keeps_a_subset_of_the_same_draw_from_one_program(digits_model,
                                                                       digits_original, splits):
  key = jax.random.key(3)
  unfiltered = perturbations.perturbed_set(digits_model, *digits_original, splits.forget, key,
                                           PerturbationConfig(kind="pgd"))
  programs = perturbations._perturb_fn.cache_info().currsize
  filtered = perturbations.perturbed_set(digits_model, *digits_original, splits.forget, key,
                                         PerturbationConfig(kind="pgd", beta_quantile=0.5))
  assert perturbations._perturb_fn.cache_info().currsize == programs  # no new program
  assert len(unfiltered) == len(splits.forget) and len(filtered) < len(unfiltered)
  rows = {row.tobytes() for row in unfiltered.images}
  assert all(row.tobytes() in rows for row in filtered.images)


def test_ou_of_the_original_against_itself_is_large(digits_model, digits_original, sets):
  result = ou_metrics(digits_model, *digits_original, sets, original=digits_original,
                      forget_classes=(0,))
  assert set(result) == {"OU/pgd", "OU/gaussian"}
  assert all(0.3 < v <= LN2 for v in result.values())  # θ_o still predicts class 0 there


def test_ou_of_the_masked_teacher_is_zero(digits_model, digits_original, masked_teacher, sets):
  for data in sets.values():
    assert ou_at_eps(digits_model, *masked_teacher, data, original=digits_original,
                     forget_classes=(0,)) < 1e-4


def test_reference_compat_keeps_every_sample(digits_model, digits_original, splits):
  ref = ou_sets(digits_model, *digits_original, splits.forget, jax.random.key(7),
                reference_compat=True)
  assert {len(d) for d in ref.values()} == {len(splits.forget)}


def test_reference_mode_steps_away_from_the_runner_up_in_pixel_space(digits_model,
                                                                     digits_original, splits):
  """The reference code's PGD on [0, 1] inputs ascends CE(runner-up): θ_o keeps the forget class
  on its set, where our default (descent, toward the runner-up) flips it; both stay in the ε-ball
  in pixel space and keep every example (no β filter)."""
  forget, key = splits.forget, jax.random.key(7)

  def perturb(mode, **kwargs):
    x = perturbations.perturbed_set(digits_model, *digits_original, forget, key,
                                    PerturbationConfig(kind="pgd", mode=mode, **kwargs))
    logits = model_outputs(digits_model, *digits_original, x)[1]
    kept = 100.0 * np.mean(np.argmax(logits, -1) == x.labels)
    return x, kept, float(np.mean(perturbations.margin(logits, x.labels)))

  clean = float(np.mean(perturbations.margin(
      model_outputs(digits_model, *digits_original, forget)[1], forget.labels)))
  # The OU@ε sets' own ε (8/255 and 0.03) move no digit across a boundary; the margins show the
  # direction: the reference's grows, ours shrinks.
  _, _, toward = perturb("targeted_boundary")
  reference, _, away = perturb("reference", eps=PIXEL_REFERENCE_PGD.eps)
  assert toward < clean < away
  assert len(reference) == len(forget)
  assert reference.images.min() >= 0.0 and reference.images.max() <= 1.0
  assert np.abs(reference.images - forget.images).max() <= PIXEL_REFERENCE_PGD.eps + 1e-6
  # A larger ball: measured 99.3 % of the reference's set stays class 0 against 9.2 % of ours.
  _, kept_toward, _ = perturb("targeted_boundary", eps=0.2, step_size=0.1)
  _, kept_away, _ = perturb("reference", eps=0.2, step_size=0.1)
  print(f"\nθ_o keeps the forget class on {kept_away:.1f} % (reference) vs {kept_toward:.1f} % "
        f"(targeted_boundary) of the PGD set at ε = 0.2")
  assert kept_away >= 95.0 and kept_toward <= 50.0


def test_ou_settings_report_every_mode_with_its_columns(digits_model, digits_original, splits):
  settings = registry.resolve({"ou": {"also": ["reference", "reference_compat"]}})["ou"]
  assert settings.mode == "targeted_boundary"
  keys = [key for _, key, _ in registry.columns({"ou": settings})]
  assert keys[keys.index("OU/gaussian") + 1:][:4] == [
      "OU/reference/pgd", "OU/reference/gaussian", "OU/reference_compat/pgd",
      "OU/reference_compat/gaussian"]
  assert "OU/reference/pgd" not in [key for _, key, _ in registry.columns()]
  with pytest.raises(ValueError, match=r"config.evaluation.ou.also: 'nope' is not a mode"):
    registry.resolve({"ou": {"also": ["nope"]}})
  with pytest.raises(ValueError, match=r"config.evaluation.ou.mode: 'x'"):
    OUSettings(mode="x")
  metric = {m.name: m for m in registry.metrics()}["ou"]
  shared = metric.prepare(digits_model, digits_original, splits, (), settings, seed=0)
  assert set(shared) == {"", "reference/", "reference_compat/"}
  default = metric.prepare(digits_model, digits_original, splits, (), OUSettings(), seed=0)
  np.testing.assert_array_equal(shared[""]["pgd"].images, default[""]["pgd"].images)
  assert {len(d) for d in shared["reference/"].values()} == {len(splits.forget)}
  context = suite.Context(splits, digits_original, (), {}, {}, {"ou": shared})
  values, _ = metric.evaluate(digits_model, *digits_original, context, settings, seed=0)
  assert set(values) == {f"OU/{p}{k}" for p in ("", "reference/", "reference_compat/")
                         for k in ("pgd", "gaussian")}


@pytest.mark.parametrize("kwargs, field", [
    ({"pgd": PerturbationConfig(kind="pgd", eps=-0.1)}, "perturbation.eps"),
    ({"gaussian": PerturbationConfig(kind="gaussian", sigma=-1.0)}, "perturbation.sigma"),
    ({"pgd": PerturbationConfig(kind="gaussian")}, "pgd"),
    ({"gaussian": PerturbationConfig(kind="pgd", beta_quantile=1.5)}, "gaussian"),
    ({"mode": "nope"}, "mode"),
])
def test_bad_set_configs_name_the_field(digits_model, digits_original, splits, kwargs, field):
  with pytest.raises(ValueError, match=field):
    ou_sets(digits_model, *digits_original, splits.forget, jax.random.key(0), **kwargs)


def test_bad_inputs_name_the_field(digits_model, digits_original, digits, sets):
  empty = ArrayDataset(np.zeros((0, *digits.image_shape), np.float32), np.zeros(0, np.int32))
  with pytest.raises(ValueError, match="forget"):
    ou_sets(digits_model, *digits_original, empty, jax.random.key(0))
  with pytest.raises(ValueError, match="perturbed"):
    ou_at_eps(digits_model, *digits_original, empty, original=digits_original, forget_classes=(0,))
  with pytest.raises(ValueError, match="forget_classes"):
    ou_at_eps(digits_model, *digits_original, sets["pgd"], original=digits_original,
              forget_classes=(10,))
  with pytest.raises(ValueError, match="forget_classes"):
    forget_mask(range(10), 10)
  with pytest.raises(ValueError, match="original_logits"):
    ou_divergence(jnp.zeros((4, 10)), jnp.zeros((5, 10)), forget_mask((0,), 10))
  with pytest.raises(ValueError, match="forget"):
    ou_divergence(jnp.zeros((4, 10)), jnp.zeros((4, 10)), forget_mask((0,), 9))
  with pytest.raises(ValueError, match="where"):
    over_unlearning(jnp.zeros((4, 10)), jnp.zeros((4, 10)), forget_mask((0,), 10),
                    where=jnp.ones(3))
