"""Objectives: per-example losses against NumPy, the composition, and gradient checks."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.spotter import spotter_terms
from unlearn_jax.models import make_model
from unlearn_jax.objectives import losses, make_objective, with_augmentation
from unlearn_jax.objectives import terms as T
from unlearn_jax.training.execute import teacher_outputs

FORGET = jnp.array([True, False, False, True, False])


def _logits(seed=0, shape=(6, 5)):
  return 3.0 * jax.random.normal(jax.random.key(seed), shape)


def test_masked_softmax_zeroes_forget_classes_and_renormalises():
  logits = _logits()
  p = losses.masked_softmax(logits, FORGET)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
  assert np.all(np.asarray(p)[:, [0, 3]] == 0.0)
  kept = jax.nn.softmax(logits[:, jnp.array([1, 2, 4])])
  np.testing.assert_allclose(p[:, jnp.array([1, 2, 4])], kept, rtol=1e-6)
  # Equals "softmax, zero the forget entries, renormalise" and ignores the forget logits.
  full = np.asarray(jax.nn.softmax(logits)) * ~np.asarray(FORGET)
  np.testing.assert_allclose(p, full / full.sum(-1, keepdims=True), rtol=1e-5)
  moved = logits.at[:, 0].add(100.0)
  np.testing.assert_array_equal(losses.masked_softmax(moved, FORGET), p)


def test_kl_and_distillation_match_numpy():
  t, s = _logits(1), _logits(2)
  for temperature in (1.0, 4.0):
    pt = np.asarray(jax.nn.softmax(t / temperature), np.float64)
    ps = np.asarray(jax.nn.softmax(s / temperature), np.float64)
    expected = temperature**2 * np.sum(pt * (np.log(pt) - np.log(ps)), -1)
    got = losses.distillation(s, t, temperature=temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
  masked = losses.distillation(s, t, forget_mask=FORGET)
  pt = np.asarray(losses.masked_softmax(t, FORGET), np.float64)
  ls = np.asarray(jax.nn.log_softmax(s), np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    expected = np.nansum(np.where(pt > 0, pt * (np.log(pt) - ls), 0.0), -1)
  np.testing.assert_allclose(masked, expected, rtol=1e-4)
  assert np.all(np.isfinite(masked))


def test_js_divergence_bounds():
  p = jax.nn.softmax(_logits(3))
  np.testing.assert_allclose(losses.js_divergence(p, p), 0.0, atol=1e-6)
  disjoint_p = jnp.array([[1.0, 0.0], [0.5, 0.5]])
  disjoint_q = jnp.array([[0.0, 1.0], [0.5, 0.5]])
  js = losses.js_divergence(disjoint_p, disjoint_q)
  np.testing.assert_allclose(js, [np.log(2), 0.0], atol=1e-6)
  assert np.all(losses.js_divergence(p, jax.nn.softmax(_logits(4))) <= np.log(2) + 1e-6)


def _naive_dispersion(features, labels):
  z = features / np.linalg.norm(features, axis=1, keepdims=True)
  total, count = 0.0, 0
  for i in range(len(z)):
    for j in range(len(z)):
      if i != j and labels[i] == labels[j]:
        total, count = total + z[i] @ z[j], count + 1
  return total / max(count, 1)


def test_dispersion_known_values_and_naive_loop():
  identical = jnp.ones((5, 4))
  np.testing.assert_allclose(losses.dispersion(identical, jnp.zeros(5, jnp.int32)), 1.0, atol=1e-6)
  orthonormal = jnp.eye(4)
  np.testing.assert_allclose(losses.dispersion(orthonormal, jnp.zeros(4, jnp.int32)), 0.0,
                             atol=1e-7)
  feats = np.asarray(jax.random.normal(jax.random.key(0), (9, 6)))
  labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
  np.testing.assert_allclose(losses.dispersion(jnp.asarray(feats), jnp.asarray(labels)),
                             _naive_dispersion(feats, labels), rtol=1e-5)
  where = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1], np.float32)
  keep = where > 0
  np.testing.assert_allclose(
      losses.dispersion(jnp.asarray(feats), jnp.asarray(labels), where=jnp.asarray(where)),
      _naive_dispersion(feats[keep], labels[keep]), rtol=1e-5)


def test_dispersion_is_safe_for_zero_features():
  feats = jnp.zeros((4, 3)).at[0].set(1.0)
  grad = jax.grad(lambda f: losses.dispersion(f, jnp.zeros(4, jnp.int32)))(feats)
  assert np.all(np.isfinite(grad))


def test_contraction_values_and_zero_gradient_at_the_origin():
  r = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(losses.contraction(r), [5.0, 0.0], atol=1e-5)
  np.testing.assert_allclose(losses.contraction(r, squared=True), [25.0, 0.0])
  grad = jax.grad(lambda x: losses.contraction(x).sum())(r)
  np.testing.assert_allclose(grad[0], [0.6, 0.8], atol=1e-5)
  np.testing.assert_array_equal(grad[1], [0.0, 0.0])


def test_relative_squared_error_known_values():
  x, t = jnp.array([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]), jnp.array([[1.0, 0.0], [3.0, 4.0],
                                                                      [3.0, 4.0]])
  np.testing.assert_allclose(losses.relative_squared_error(x, t), [4.0, 1.0, 0.0])
  np.testing.assert_allclose(losses.relative_squared_error(jnp.ones((1, 3)), jnp.zeros((1, 3)),
                                                          eps=0.5), [6.0])


def test_l1_and_masked_mean():
  assert float(losses.l1_norm({"a": jnp.array([-1.0, 2.0]), "b": jnp.array([[3.0]])})) == 6.0
  np.testing.assert_allclose(losses.masked_mean(jnp.array([1.0, 3.0, 100.0]),
                                                where=jnp.array([1.0, 1.0, 0.0])), 2.0)


def test_axis_and_where_as_in_optax():
  log_q, p = jax.nn.log_softmax(_logits(1)), jax.nn.softmax(_logits(2))
  keep = ~FORGET
  np.testing.assert_allclose(losses.kl_divergence(log_q.T, p.T, axis=0, where=keep[:, None]),
                             optax.kl_divergence(log_q, p, where=keep), rtol=1e-6)
  values, where = _logits(3), _logits(4) > 0
  np.testing.assert_allclose(losses.masked_mean(values, axis=0, where=where),
                             np.sum(values * where, 0) / np.maximum(np.sum(where, 0), 1), rtol=1e-6)
  feats, labels = _logits(5, (9, 6)), jnp.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
  np.testing.assert_allclose(losses.dispersion(feats.T, labels, axis=0),
                             losses.dispersion(feats, labels), rtol=1e-6)
  np.testing.assert_allclose(losses.contraction(jnp.array([[3.0, 4.0, 12.0]]),
                                                where=jnp.array([True, True, False])), [5.0],
                             atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
  model = make_model("mlp", num_classes=5, input_shape=(3, 3, 1), mean=(0.5,), std=(0.3,),
                     hidden=(6, 4))
  params, state = model.init(jax.random.key(0))
  # Move every parameter off 0 (zero-initialised biases sit on |θ|'s kink for the l1 check).
  params = jax.tree.map(lambda p: p + 0.05 * jnp.sign(jnp.sin(jnp.arange(p.size) + 1.0)).reshape(
      p.shape), params)
  key = jax.random.key(1)
  def stream(i):
    return {"image": jax.random.uniform(jax.random.fold_in(key, i), (6, 3, 3, 1)),
            "label": jnp.array([0, 3, 0, 3, 1, 2]), "mask": jnp.array([1, 1, 1, 1, 1, 0.0]),
            "is_forget": jnp.array([1, 1, 0, 0, 1, 0.0]),
            "target": jax.random.uniform(jax.random.fold_in(key, 10 + i), (6, 4))}
  batch = {"forget": stream(0), "retain": stream(1), "perturbed": stream(2), "mixed": stream(3),
           "progress": jnp.float32(0.25)}
  teacher, _ = model.init(jax.random.key(2))
  bad, _ = model.init(jax.random.key(3))
  frozen = {"teachers": {"original": (teacher, state), "bad": (bad, state)},
            "forget_mask": FORGET}
  return model, params, state, batch, frozen


TERMS = {
    "ce": T.cross_entropy("retain"),
    "neg_ce": T.negated_cross_entropy("forget"),
    "kd": T.distillation("retain", temperature=2.0),
    "masked_kd": T.distillation("forget", masked=True),
    "neg_kd": T.negated_distillation("forget", temperature=4.0),
    "dispersion": T.dispersion("forget"),
    "contraction": T.contraction("forget"),
    "contraction_features_sq": T.contraction("forget", representation="features", squared=True),
    "l1": T.l1_penalty(),
    "blend_kd": T.blended_teacher_distillation("mixed"),
    "feature_target": T.feature_target("forget"),
}


@pytest.mark.parametrize("name", sorted(TERMS))
def test_each_term_gradient_matches_finite_differences(tiny, name):
  """In float64, so central differences are exact enough away from ReLU kinks."""
  with jax.enable_x64(True):
    def to64(tree):
      return jax.tree.map(
          lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    model, (params, state, batch, frozen) = tiny[0], to64(tiny[1:])
    objective = make_objective(model, {name: TERMS[name]})
    ctx = {**frozen, "weights": {name: jnp.float64(1.0)}}
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def loss(v):
      return objective(unravel(v), state, batch, jax.random.key(0), ctx)[0]

    check_grads(loss, (flat,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)


def test_random_labels_term_draws_from_the_key(tiny):
  model, params, state, batch, frozen = tiny
  objective = make_objective(model, {"rl": T.random_label_cross_entropy("forget")})
  ctx = {**frozen, "weights": {"rl": jnp.float32(1.0)}}
  a = objective(params, state, batch, jax.random.key(0), ctx)[0]
  b = objective(params, state, batch, jax.random.key(0), ctx)[0]
  c = objective(params, state, batch, jax.random.key(5), ctx)[0]
  assert a == b and a != c


def test_objective_is_the_weighted_sum_and_spotter_plus_x_is_a_union(tiny):
  model, params, state, batch, frozen = tiny
  combined = {**spotter_terms(), "ce": T.cross_entropy("retain")}
  weights = {"mkd": 0.7, "mkd_near": 0.3, "dispersion": 1.0, "ce": 2.0}
  objective = jax.jit(make_objective(model, combined))
  ctx = {**frozen, "weights": {k: jnp.float32(v) for k, v in weights.items()}}
  loss, (_, aux) = objective(params, state, batch, jax.random.key(0), ctx)
  np.testing.assert_allclose(loss, sum(weights[k] * aux[f"{k}/loss"] for k in weights),
                             rtol=1e-5)
  assert set(aux) == {"mkd/loss", "mkd_near/loss", "dispersion/loss", "ce/loss"}
  # Jit parity, and new weights need no recompilation (they are an argument).
  eager = make_objective(model, combined)(params, state, batch, jax.random.key(0), ctx)[0]
  np.testing.assert_allclose(loss, eager, rtol=1e-5)


def test_teacher_outputs_computed_beforehand_replace_the_teacher_forward(tiny):
  """Streams carrying θ_o's (and the bad teacher's) outputs give the same loss and gradient, and
  the objective no longer reads the teachers' parameters (NaN teachers change nothing)."""
  model, params, state, batch, frozen = tiny
  teacher_terms = {k: TERMS[k] for k in ("kd", "masked_kd", "neg_kd", "blend_kd")}
  ctx = {**frozen, "weights": {k: jnp.float32(1.0) for k in teacher_terms}}
  objective = make_objective(model, teacher_terms)

  def value_and_grad(b, c):
    return jax.value_and_grad(lambda p: objective(p, state, b, jax.random.key(0), c)[0])(params)

  with_outputs = dict(batch)
  for s in ("forget", "retain", "mixed"):
    data = ArrayDataset(np.asarray(batch[s]["image"]), np.asarray(batch[s]["label"]))
    with_outputs[s] = {**batch[s], **teacher_outputs(model, data, original=frozen["teachers"][
        "original"], bad=frozen["teachers"]["bad"])}
  nan_teachers = {**ctx, "teachers": jax.tree.map(lambda x: jnp.full_like(x, jnp.nan),
                                                  ctx["teachers"])}
  loss, grad = value_and_grad(batch, ctx)
  loss_pre, grad_pre = value_and_grad(with_outputs, nan_teachers)
  np.testing.assert_allclose(loss_pre, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grad_pre, grad)
  assert np.isnan(value_and_grad(batch, nan_teachers)[0])
  with pytest.raises(ValueError, match="stream 'forget': augmented images cannot use teacher"):
    with_augmentation(objective, "forget")(params, state, with_outputs, jax.random.key(0), ctx)


def test_objectives_over_a_partition_of_streams_sum_to_the_objective(tiny):
  """One objective per data set (ℓ1, reading none, with the first); their losses, gradients and
  random draws (each term keeps its key) add up to the whole objective's."""
  model, params, state, batch, frozen = tiny
  terms = {**TERMS, "rl": T.random_label_cross_entropy("forget")}
  parts = [("forget", None), ("mixed",), ("retain",)]
  ctx = {**frozen, "weights": {k: jnp.float32(0.5 + i) for i, k in enumerate(sorted(terms))}}

  def value_and_grad(objective):
    return jax.value_and_grad(lambda p: objective(p, state, batch, jax.random.key(7), ctx)[0])(
        params)

  loss, grad = value_and_grad(make_objective(model, terms))
  split = [value_and_grad(make_objective(model, terms, streams=p)) for p in parts]
  np.testing.assert_allclose(sum(v for v, _ in split), loss, rtol=1e-6)
  jax.tree.map(lambda a, *b: np.testing.assert_allclose(sum(b), a, rtol=1e-5, atol=1e-6),
               grad, *[g for _, g in split])
  with pytest.raises(ValueError, match=r"streams: \['nope'\] select no term"):
    make_objective(model, terms, streams=("nope",))
