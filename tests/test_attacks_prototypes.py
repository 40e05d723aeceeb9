"""Prototypical relearning attack: the head edit's algebra, the grid, and real digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.data.splits import ForgetSpec, make_splits
from unlearn_jax.evaluation import prototypes, registry, suite
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.evaluation.pra_geometry import head_row_norms, same_class_cosine
from unlearn_jax.evaluation.prototypes import (
  ALPHAS,
  PRASettings,
  edit_head,
  pra_grid,
  prototype,
  prototypical_relearning,
)
from unlearn_jax.objectives.losses import dispersion


@pytest.fixture(scope="module")
def class0(digits_class0):
  return digits_class0


@pytest.fixture(scope="module")
def ga_unlearned(digits_model, digits_original, class0, digits_ga):
  return digits_ga


def _unit_rows(key, n, d):
  return prototype(jax.random.normal(key, (n, 3, d)))


def test_prototype_is_normalised_mean():
  z = np.array([[[1.0, 2.0, 2.0], [3.0, 2.0, 4.0]]], np.float32)
  mean = z.mean(axis=1)
  np.testing.assert_allclose(prototype(z), mean / np.linalg.norm(mean, axis=-1, keepdims=True),
                             rtol=1e-6)
  zero = prototype(jnp.zeros((2, 4, 3)))
  assert np.all(np.isfinite(zero)) and np.all(zero == 0)


@pytest.mark.parametrize("mode", ["cosine", "l2"])
def test_alpha_zero_is_identity(digits_original, mode):
  params = digits_original[0]
  protos = _unit_rows(jax.random.key(0), 2, params["head"]["kernel"].shape[0])
  edited = edit_head(params, protos, jnp.array([0, 3]), 0.0, mode=mode)
  for a, b in zip(jax.tree.leaves(edited), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("alpha", [0.2, 0.7, 1.0])
def test_edit_matches_naive_numpy(digits_original, alpha):
  params = digits_original[0]
  kernel, bias = np.asarray(params["head"]["kernel"]), np.asarray(params["head"]["bias"])
  classes = np.array([2, 5])
  protos = np.asarray(_unit_rows(jax.random.key(1), 2, kernel.shape[0]))
  cos = edit_head(params, protos, classes, alpha, mode="cosine")["head"]
  l2 = edit_head(params, protos, classes, alpha, mode="l2")["head"]
  kept = np.setdiff1d(np.arange(kernel.shape[1]), classes)
  for i, c in enumerate(classes):
    np.testing.assert_array_equal(cos["bias"][c], np.float32(1 - alpha) * bias[c])
    np.testing.assert_allclose(cos["kernel"][:, c], alpha * protos[i] + (1 - alpha) * kernel[:, c],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(l2["kernel"][:, c],
                               2 * alpha * protos[i] + (1 - alpha) * kernel[:, c],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(l2["bias"][c], -alpha * np.sum(protos[i]**2)
                               + (1 - alpha) * bias[c], rtol=1e-6, atol=1e-7)
  for head in (cos, l2):
    np.testing.assert_array_equal(head["kernel"][:, kept], kernel[:, kept])
    np.testing.assert_array_equal(head["bias"][kept], bias[kept])


def test_l2_rule_is_nearest_prototype():
  """With α = 1 the L2 rule's logit is s_c = ‖z‖² − ‖z − p̂_c‖²."""
  params = {"head": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)}}
  p = _unit_rows(jax.random.key(2), 1, 4)
  z = jax.random.normal(jax.random.key(3), (6, 4))
  head = edit_head(params, p, jnp.array([1]), 1.0, mode="l2")["head"]
  logit = z @ head["kernel"][:, 1] + head["bias"][1]
  np.testing.assert_allclose(logit, jnp.sum(z**2, -1) - jnp.sum((z - p)**2, -1), atol=1e-5)


def test_edit_jit_and_vmap_over_alpha(digits_original):
  params = digits_original[0]
  protos = _unit_rows(jax.random.key(4), 1, params["head"]["kernel"].shape[0])
  classes, alphas = jnp.array([7]), jnp.array([0.2, 0.6, 1.0])
  batched = jax.jit(jax.vmap(lambda a: edit_head(params, protos, classes, a)["head"]))(alphas)
  for i, a in enumerate(alphas):
    single = edit_head(params, protos, classes, a)["head"]
    np.testing.assert_allclose(batched["kernel"][i], single["kernel"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(batched["bias"][i], single["bias"], rtol=1e-6, atol=1e-7)


def _synthetic_sets(key, num_classes=4, per_class=20):
  """Features clustered at 10·e_y; a head W = I whose forgotten classes 0, 1 have bias −1000."""
  labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  z = 10 * np.eye(num_classes, dtype=np.float32)[labels]
  z = z + 0.5 * np.abs(np.asarray(jax.random.normal(key, z.shape)))
  params = {"head": {"kernel": jnp.eye(num_classes),
                     "bias": jnp.array([-1000.0, -1000.0, 0.0, 0.0])}}
  forget = labels < 2
  sets = {"forget": (z[forget], labels[forget]), "test_forget": (z[forget], labels[forget]),
          "test_retain": (z[~forget], labels[~forget])}
  return params, sets


def test_grid_edits_every_forgotten_class():
  params, sets = _synthetic_sets(jax.random.key(5))
  result = pra_grid(params, sets, (0, 1), seed=0, shots=(1, 3), num_draws=2)
  assert result["base"]["forget"] == 0.0
  assert len(result["settings"]) == 2 * 2 * len(ALPHAS)  # shots × rules × α
  best = result["strongest"]
  assert best["forget"] == 100.0 and best["test_forget"] == 100.0 and best["kept_drop"] <= 1.0
  shots = np.asarray(result["shots"]["forget/3"])
  assert shots.shape == (2, 2, 3)
  labels = sets["forget"][1]
  assert np.all(labels[shots[:, 0]] == 0) and np.all(labels[shots[:, 1]] == 1)
  again = pra_grid(params, sets, (0, 1), seed=0, shots=(1, 3), num_draws=2)
  assert again["shots"] == result["shots"]
  other = pra_grid(params, sets, (0, 1), seed=1, shots=(1, 3), num_draws=2)
  assert other["shots"] != result["shots"]


def test_grid_compiles_one_program_for_every_k_and_rule():
  params, sets = _synthetic_sets(jax.random.key(7), per_class=13)  # shapes no other test uses
  compiled = prototypes._grid_correct._cache_size()
  result = pra_grid(params, sets, (0, 1), seed=0, shots=(1, 2, 5), num_draws=2)
  assert prototypes._grid_correct._cache_size() == compiled + 1  # base, both rules, every K
  assert {s["mode"] for s in result["settings"]} == {"cosine", "l2"}


def test_strongest_respects_kept_accuracy():
  """A constraint no setting meets gives no strongest attack rather than a harmful one."""
  params, sets = _synthetic_sets(jax.random.key(6))
  result = pra_grid(params, sets, (0, 1), seed=0, shots=(2,), num_draws=2, max_kept_drop=-1.0)
  assert result["strongest"] is None and result["strongest_by_shots"]["forget/2"] is None


def test_pra_recovers_gradient_ascent_on_digits(digits_model, class0, ga_unlearned):
  """ReLU features have large norms, so the forget class flips from losing to taking every
  image within a narrow α window; the attacker sweeps α in steps of 0.05 to find it."""
  alphas = tuple(np.round(np.arange(1, 21) * 0.05, 2))
  result = prototypical_relearning(digits_model, *ga_unlearned, class0, seed=0, shots=(1, 5),
                                   num_draws=3, shot_sources=("forget", "test_forget"),
                                   alphas=alphas)
  best = result["strongest"]
  print(f"\nGA-unlearned digits: Acc(D_f) {result['base']['forget']:.1f}% → PRA "
        f"{best['forget']:.1f}% (D_t^f {best['test_forget']:.1f}%, {best['mode']}, "
        f"α={best['alpha']}, K={best['shots']} from {best['source']}, kept drop "
        f"{best['kept_drop']:.2f} pt)")
  assert result["base"]["forget"] <= 5.0
  assert best["forget"] >= 50.0 and best["test_forget"] >= 50.0
  assert best["kept_drop"] <= 1.0
  assert set(result["strongest_by_shots"]) == {"forget/1", "forget/5", "test_forget/1",
                                               "test_forget/5"}


def test_same_class_cosine_is_the_dispersion_of_the_whole_set():
  z = jax.random.normal(jax.random.key(8), (30, 6))
  labels = jnp.asarray(np.arange(30) % 3, jnp.int32)
  z = z.at[4].set(0.0)  # a zero row: cosine 0 with everything, its pairs still counted
  np.testing.assert_allclose(same_class_cosine(z, labels, num_classes=4), dispersion(z, labels),
                             rtol=1e-5, atol=1e-6)
  same = jnp.ones((5, 3))
  np.testing.assert_allclose(same_class_cosine(same, jnp.zeros(5, jnp.int32), num_classes=1), 1.0,
                             rtol=1e-6)
  np.testing.assert_allclose(same_class_cosine(jnp.eye(4), jnp.zeros(4, jnp.int32),
                                               num_classes=2), 0.0, atol=1e-7)
  assert float(same_class_cosine(jnp.eye(2), jnp.array([0, 1]), num_classes=2)) == 0.0


def test_rescaled_head_predicts_the_same_but_moves_the_fixed_alpha_attack(digits_model, class0,
                                                                           ga_unlearned):
  """W, b → 10 W, 10 b changes no prediction, but the cosine edit still writes a unit column: at the
  reference's fixed α = 0.8 the attack falls (measured on GA-digits: 100 % → 12.7 %), and the head
  norms show why."""
  params, state = ga_unlearned
  scaled = {**params, "head": {"kernel": 10.0 * np.asarray(params["head"]["kernel"]),
                               "bias": 10.0 * np.asarray(params["head"]["bias"])}}
  for data in (class0.forget, class0.test_retain):
    np.testing.assert_array_equal(
        np.argmax(model_outputs(digits_model, params, state, data)[1], -1),
        np.argmax(model_outputs(digits_model, scaled, state, data)[1], -1))
  norms, scaled_norms = (head_row_norms(p, (0,)) for p in (params, scaled))
  np.testing.assert_allclose(scaled_norms["forget"], 10 * norms["forget"], rtol=1e-5)
  np.testing.assert_allclose(scaled_norms["kept"], 10 * norms["kept"], rtol=1e-5)

  def fixed(p):
    result = prototypical_relearning(digits_model, p, state, class0, seed=0, shots=(5,),
                                     modes=("cosine",), alphas=(0.8,))
    return result["settings"][0]["forget"], result["geometry"]

  before, geometry = fixed(params)
  after, scaled_geometry = fixed(scaled)
  print(f"\nGA-digits, cosine PRA at α = 0.8, 5 shots: {before:.1f} % → {after:.1f} % with the "
        f"head ×10 (‖w‖ forget {norms['forget']:.2f} → {scaled_norms['forget']:.2f}); mean "
        f"forget cosine {geometry['forget_cosine']:.3f}")
  assert before >= 90.0 and after <= 50.0
  assert geometry["forget_cosine"] == scaled_geometry["forget_cosine"]  # the features are alike
  assert geometry["head_norm_forget"] == norms["forget"]


def test_pra_metric_reports_the_geometry_and_its_columns(digits_model, digits_original, class0):
  settings = registry.resolve({"pra": {"shots": [5], "num_draws": 2, "geometry": True}})["pra"]
  metric = {m.name: m for m in registry.metrics()}["pra"]
  context = suite.Context(class0, digits_original, (), {}, {}, {})
  values, details = metric.evaluate(digits_model, *digits_original, context, settings, seed=0,
                                    name="original")
  assert {"head/norm_forget", "head/norm_kept", "cos/forget"} <= set(values)
  assert values["head/norm_forget"] == details["pra"]["geometry"]["head_norm_forget"]
  assert 0.5 < values["cos/forget"] <= 1.0  # θ_o's forget features are concentrated
  keys = [key for _, key, _ in registry.columns({"pra": settings})]
  assert keys[keys.index("PRA/ref_kept_drop") + 1:][:3] == [
      "head/norm_forget", "head/norm_kept", "cos/forget"]
  plain = [key for _, key, _ in registry.columns({"pra": PRASettings()})]
  assert "head/norm_forget" not in plain


def test_bad_inputs_name_the_field(digits, digits_model, digits_original, class0):
  params, sets = _synthetic_sets(jax.random.key(7))
  with pytest.raises(ValueError, match=r"shots: K=21 exceeds the 20 images of class 0"):
    pra_grid(params, sets, (0, 1), seed=0, shots=(21,))
  with pytest.raises(ValueError, match="shots: K=50 exceeds the 36 images of class 0 in "
                     "test_forget"):
    prototypical_relearning(digits_model, *digits_original, class0, seed=0, shots=(50,),
                            shot_sources=("test_forget",))
  empty = {**sets, "forget": (sets["forget"][0][:0], sets["forget"][1][:0])}
  with pytest.raises(ValueError, match="sets.forget"):
    pra_grid(params, empty, (0, 1), seed=0)
  with pytest.raises(ValueError, match="forget_classes"):
    pra_grid(params, sets, (), seed=0)
  with pytest.raises(ValueError, match="alphas"):
    pra_grid(params, sets, (0,), seed=0, alphas=(1.5,))
  with pytest.raises(ValueError, match="mode"):
    edit_head(params, jnp.zeros((1, 4)), jnp.array([0]), 0.5, mode="dot")
  with pytest.raises(ValueError, match=r"params: no final layer"):
    edit_head({"dense": params["head"]}, jnp.zeros((1, 4)), jnp.array([0]), 0.5)
  random_split = make_splits(digits, ForgetSpec(fraction=0.1), seed=0)
  with pytest.raises(ValueError, match="splits.forget_classes"):
    prototypical_relearning(digits_model, *digits_original, random_split, seed=0)


def _naive_reference(kernel, bias, sets, classes, alpha, positions):
  """The reference code's fixed edit in plain NumPy: per draw, the unit mean of K shots of each
  forgotten class c replaces W[:, c] by α p̂_c + (1 − α) W[:, c], b_c by (1 − α) b_c; returns the
  mean forget accuracy (%) over draws."""
  z, y = (np.asarray(a, np.float64) for a in sets["forget"])
  accuracies = []
  for draw in positions:
    w, b = np.array(kernel, np.float64), np.array(bias, np.float64)
    for i, c in enumerate(classes):
      mean = z[draw[i]].mean(axis=0)
      w[:, c] = alpha * mean / np.linalg.norm(mean) + (1 - alpha) * w[:, c]
      b[c] = (1 - alpha) * b[c]
    accuracies.append(100.0 * np.mean(np.argmax(z @ w + b, axis=1) == y))
  return float(np.mean(accuracies))


@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.0, 0.33])
def test_reference_setting_equals_naive_numpy(alpha):
  """PRA ref.: the cosine rule with K = 5 shots from D_f at a fixed α, no selection; the shots
  are the grid's draws, so the value is the grid's entry where the grid has that α."""
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), 15).astype(np.int32)
  z = (np.abs(rng.normal(size=(60, 6))) + 3.0 * np.eye(4, 6)[labels]).astype(np.float32)
  kernel = rng.normal(size=(6, 4)).astype(np.float32)
  bias = np.array([-4.0, -4.0, 0.5, 0.0], np.float32)
  forget = labels < 2
  sets = {"forget": (z[forget], labels[forget]), "test_forget": (z[forget], labels[forget]),
          "test_retain": (z[~forget], labels[~forget])}
  params = {"head": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
  ref = prototypes.pra_reference(params, sets, (0, 1), seed=3, alpha=alpha, shots=5, num_draws=3)
  grid = pra_grid(params, sets, (0, 1), seed=3, shots=(5,), num_draws=3, alphas=(alpha,),
                  modes=("cosine",))
  positions = np.asarray(grid["shots"]["forget/5"])
  assert ref["forget"] == pytest.approx(_naive_reference(kernel, bias, sets, (0, 1), alpha,
                                                         positions), abs=1e-9)
  if alpha in ALPHAS:
    full = pra_grid(params, sets, (0, 1), seed=3, shots=(1, 5), num_draws=3)
    entry = prototypes._find(full["settings"], 5, alpha)
    assert entry["forget"] == ref["forget"] and entry["kept_drop"] == ref["kept_drop"]


def test_metric_reports_the_reference_setting_per_model_and_the_strongest(digits_model, class0,
                                                                          ga_unlearned):
  """α by model name (original 0.5, Retrain 1.0, Spotter 0.8, others ref_alpha); an α off the
  grid is computed from the same draws; the strongest setting is recorded as numbers and words."""
  from types import SimpleNamespace
  context = SimpleNamespace(splits=class0)
  settings = prototypes.PRASettings(shots=(5,), num_draws=2)
  out = {}
  for name in ("original", "retrain", "spotter", "ga", None):
    out[name], details = prototypes.METRIC.evaluate(digits_model, *ga_unlearned, context,
                                                    settings, seed=0, name=name)
  assert [out[n]["PRA/ref_alpha"] for n in out] == [0.5, 1.0, 0.8, 0.8, 0.8]
  m = out["ga"]
  grid = prototypical_relearning(digits_model, *ga_unlearned, class0, seed=0, shots=(5,),
                                 num_draws=2)
  assert m["PRA/ref"] == prototypes._find(grid["settings"], 5, 0.8)["forget"]
  strongest = grid["strongest"]
  assert m["PRA/forget"] == strongest["forget"] and m["PRA/strongest_shots"] == 5
  assert m["PRA/strongest_alpha"] == strongest["alpha"]
  assert m["PRA/strongest_l2"] == float(strongest["mode"] == "l2")
  assert m["PRA/strongest_at"] == prototypes.strongest_at(strongest)
  assert details["pra"]["reference"]["alpha"] == 0.8
  off = prototypes.PRASettings(shots=(5,), num_draws=2, ref_alpha=0.33)
  m_off, _ = prototypes.METRIC.evaluate(digits_model, *ga_unlearned, context, off, seed=0,
                                        name="ga")
  sets = prototypes._feature_sets(digits_model, ga_unlearned[0], ga_unlearned[1], class0)
  assert m_off["PRA/ref"] == prototypes.pra_reference(ga_unlearned[0], sets, (0,), seed=0,
                                                      alpha=0.33, num_draws=2)["forget"]


def test_reference_settings_are_checked():
  with pytest.raises(ValueError, match=r"config.evaluation.pra.ref_alpha: α = 1.5"):
    prototypes.PRASettings(ref_alpha=1.5)
  with pytest.raises(ValueError, match=r"config.evaluation.pra.ref_alphas"):
    prototypes.PRASettings(ref_alphas=(("retrain",),))
