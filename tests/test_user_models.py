"""Your own model and data: Model.from_module (Linen with Dropout, NNX through the bridge), CF-k's
blocks, the objective's contract checks, plain arrays for unlearn and the splits."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unlearn_jax.data.splits import ForgetSpec, as_dataset, make_splits, splits_from_arrays
from unlearn_jax.evaluation.over_unlearning import EVAL_PGD, ou_sets
from unlearn_jax.methods import Original
from unlearn_jax.methods.last_k import last_blocks_mask
from unlearn_jax.methods.spotter import PGD
from unlearn_jax.models import Model, make_model
from unlearn_jax.objectives import forget_mask, make_frozen, make_objective, terms
from unlearn_jax.perturbations import PerturbationConfig
from unlearn_jax.unlearning import unlearn

SHAPE = (8, 8, 1)


class DropoutNet(nn.Module):
  """Layers named against their order (``zeta`` runs first), Dropout before the head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Dense(16, name="zeta")(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(16, name="alpha")(x)))
    return x, nn.Dense(3, name="head")(x)


class NNXNet(nnx.Module):
  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 16, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)
    self.head = nnx.Linear(16, num_classes, rngs=rngs)

  def __call__(self, x, train: bool = False):
    z = self.dropout(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))), deterministic=not train)
    return z, self.head(z)


def _images(n=6, seed=1):
  return jax.random.uniform(jax.random.key(seed), (n, *SHAPE))


@pytest.mark.floors
@pytest.mark.parametrize("module", [DropoutNet(), nnx.bridge.to_linen(NNXNet, 3)],
                         ids=["linen", "nnx"])
def test_from_module_runs_dropout_from_the_key_in_training_only(module):
  model = Model.from_module(module, SHAPE, 3)
  params, state = model.init(jax.random.key(0))
  assert params["head"]["kernel"].shape == (16, 3) and state == {}
  x = _images()
  apply = jax.jit(model.apply, static_argnames="train")
  eval_a, eval_b = apply(params, state, x)[1], apply(params, state, x)[1]
  np.testing.assert_array_equal(eval_a, eval_b)
  key_a = apply(params, state, x, train=True, key=jax.random.key(3))[0]
  again = apply(params, state, x, train=True, key=jax.random.key(3))[0]
  key_b = apply(params, state, x, train=True, key=jax.random.key(4))[0]
  np.testing.assert_array_equal(key_a, again)
  assert not np.array_equal(key_a, key_b)
  features, dropped = np.asarray(apply(params, state, x)[0]), np.asarray(key_a) == 0
  np.testing.assert_allclose(np.asarray(key_a)[~dropped], 2 * features[~dropped], rtol=1e-5)
  assert np.sum(dropped & (features != 0)) > 10  # inverted dropout at rate 0.5


@pytest.mark.floors
def test_the_objective_feeds_dropout_a_key_per_step():
  model = Model.from_module(DropoutNet(), SHAPE, 3)
  params, state = model.init(jax.random.key(0))
  batch = {"retain": {"image": _images(), "label": jnp.array([0, 1, 2, 0, 1, 2]),
                      "mask": jnp.ones(6)}}
  frozen = make_frozen({"ce": 1.0})
  objective = jax.jit(make_objective(model, {"ce": terms.cross_entropy("retain")}))
  loss = [float(objective(params, state, batch, jax.random.key(k), frozen)[0]) for k in (1, 1, 2)]
  assert loss[0] == loss[1] != loss[2]
  frozen_bn = jax.jit(make_objective(model, {"ce": terms.cross_entropy("retain")},
                                     bn_train=False))
  assert float(frozen_bn(params, state, batch, jax.random.key(1), frozen)[0]) == float(
      frozen_bn(params, state, batch, jax.random.key(2), frozen)[0])


@pytest.mark.floors
def test_blocks_follow_the_call_order_not_the_names():
  model = Model.from_module(DropoutNet(), SHAPE, 3)
  params, _ = model.init(jax.random.key(0))
  assert list(params) == ["alpha", "head", "zeta"]  # a jitted init sorts the names
  assert model.blocks(params) == [["zeta"], ["alpha"], ["head"]]
  mask = last_blocks_mask(model, params, 2)
  assert float(mask["zeta"]["kernel"].max()) == 0 and float(mask["alpha"]["kernel"].min()) == 1
  resnet = make_model("resnet18", num_classes=10, input_shape=(8, 8, 3), width=0.125,
                      mean=(0.5,) * 3, std=(0.25,) * 3)
  abstract, _ = jax.eval_shape(resnet.init, jax.random.key(0))
  assert resnet.blocks(abstract)[-2:] == [["layer4_0", "layer4_1"], ["head"]]


@pytest.mark.floors
def test_an_nnx_module_states_its_blocks():
  model = Model.from_module(nnx.bridge.to_linen(NNXNet, 3), SHAPE, 3)
  params, _ = model.init(jax.random.key(0))
  assert model.name == "NNXNet"
  with pytest.raises(ValueError, match="groups="):
    model.blocks(params)
  grouped = Model.from_module(nnx.bridge.to_linen(NNXNet, 3), SHAPE, 3,
                              groups=(("hidden",), ("head",)))
  assert grouped.blocks(params) == [["hidden"], ["head"]]
  with pytest.raises(ValueError, match="exactly once"):
    Model.from_module(nnx.bridge.to_linen(NNXNet, 3), SHAPE, 3,
                      groups=(("head",),)).blocks(params)


def _spotter_like(model):
  """Masked KD on forget (a teacher), dispersion, CE on retain: every kind of contract."""
  return make_objective(model, {"mkd": terms.distillation("forget", masked=True),
                                "ce": terms.cross_entropy("retain")})


@pytest.mark.floors
@pytest.mark.parametrize("change, match", [
    (lambda b, f: ({"forget": b["forget"]}, f), r"no stream 'retain' \(read by term\(s\) \['ce'\]"
                                                r"\); given: \['forget'\]"),
    (lambda b, f: ({**b, "retain": {"image": b["retain"]["image"]}}, f),
     r"batch\['retain'\]: no \['label', 'mask'\]"),
    (lambda b, f: (b, {**f, "weights": {"mkd": f["weights"]["mkd"]}}),
     r"no weight for term\(s\) \['ce'\]; given: \['mkd'\]"),
    (lambda b, f: (b, {k: v for k, v in f.items() if k != "teachers"}),
     r"no teacher 'original' \(read by term\(s\) \['mkd'\]"),
    (lambda b, f: (b, {k: v for k, v in f.items() if k != "forget_mask"}),
     r"frozen: no \['forget_mask'\] \(read by term 'mkd'\)"),
    (lambda b, f: (b, {"teachers": f["teachers"]}), r"frozen: no 'weights'"),
])
def test_a_missing_piece_of_the_contract_is_named(change, match):
  model = Model.from_module(DropoutNet(), SHAPE, 3)
  params, state = model.init(jax.random.key(0))
  stream = {"image": _images(), "label": jnp.zeros(6, jnp.int32), "mask": jnp.ones(6)}
  batch = {"forget": stream, "retain": stream}
  frozen = make_frozen({"mkd": 1.0, "ce": 1.0}, teachers={"original": (params, state)},
                       forget_mask=forget_mask((0,), 3))
  _spotter_like(model)(params, state, batch, jax.random.key(0), frozen)  # complete: runs
  batch, frozen = change(batch, frozen)
  with pytest.raises(ValueError, match=match):
    _spotter_like(model)(params, state, batch, jax.random.key(0), frozen)


@pytest.mark.floors
def test_bad_terms_and_frozen_pieces_are_refused():
  model = Model.from_module(DropoutNet(), SHAPE, 3)
  with pytest.raises(ValueError, match=r"terms: \['ce'\] are not Terms"):
    make_objective(model, {"ce": lambda c: 0.0})
  with pytest.raises(ValueError, match=r"weights.ce: -1.0"):
    make_frozen({"ce": -1.0})
  with pytest.raises(ValueError, match="forget_mask: int64"):
    make_frozen({"ce": 1.0}, forget_mask=np.array([1, 0]))
  with pytest.raises(ValueError, match="input_shape"):
    Model.from_module(DropoutNet(), (8, 8), 3)
  with pytest.raises(ValueError, match=r"nnx.bridge.to_linen\(MyModule"):
    Model.from_module(NNXNet(3, rngs=nnx.Rngs(0)), SHAPE, 3)
  with pytest.raises(ValueError, match="mean/std"):
    Model.from_module(DropoutNet(), SHAPE, 3, mean=(0.5,))


def test_reference_compat_reads_the_normalisation_the_model_states(digits, digits_model,
                                                                   digits_original,
                                                                   digits_class0):
  forget = digits_class0.forget.subset(np.arange(40))
  bare = Model.from_module(digits_model.module, digits.image_shape, 10)
  with pytest.raises(ValueError, match="states no normalisation"):
    ou_sets(bare, *digits_original, forget, jax.random.key(0), reference_compat=True)
  stated = Model.from_module(digits_model.module, digits.image_shape, 10, mean=digits.mean,
                             std=digits.std)
  ours = ou_sets(stated, *digits_original, (forget.images, forget.labels), jax.random.key(0),
                 reference_compat=True)
  built = ou_sets(digits_model, *digits_original, forget, jax.random.key(0),
                  reference_compat=True)
  for kind in ("pgd", "gaussian"):
    np.testing.assert_array_equal(ours[kind].images, built[kind].images)


def test_splits_from_arrays_equal_make_splits_on_the_same_data(digits):
  splits = make_splits(digits, ForgetSpec(classes=(0,)), seed=3)
  own = splits_from_arrays((splits.forget.images, splits.forget.labels), splits.retain,
                           (digits.test.images, digits.test.labels), num_classes=10,
                           forget_classes=(0,), seed=3)
  for name in ("forget", "retain", "test_forget", "test_retain", "calibration", "test_heldout"):
    np.testing.assert_array_equal(getattr(own, name).images, getattr(splits, name).images)
    np.testing.assert_array_equal(getattr(own, name).labels, getattr(splits, name).labels)
  only_forget = splits_from_arrays(splits.forget, num_classes=10, forget_classes=(0,))
  assert len(only_forget.retain) == len(only_forget.test_retain) == 0


@pytest.mark.parametrize("call, match", [
    (lambda f: splits_from_arrays(f, num_classes=10, forget_classes=(3,)),
     r"forget_classes: \(3,\), but the forget set holds classes \[0\]"),
    (lambda f: splits_from_arrays((f.images[:, :4], f.labels), f, num_classes=10),
     "retain: images of shape"),
    (lambda f: splits_from_arrays((f.images, f.labels + 20), num_classes=10),
     "forget: labels span 20..20"),
    (lambda f: splits_from_arrays(f.images, num_classes=10), "forget: a ndarray"),
    (lambda f: as_dataset([f.images], "x"), "x: a list"),
])
def test_bad_arrays_name_the_set(digits_class0, call, match):
  with pytest.raises(ValueError, match=match):
    call(digits_class0.forget)


def test_unlearn_on_arrays_equals_unlearn_on_splits(digits_model, digits_original, digits_class0,
                                                    digits_ga):
  original = Original(digits_model, *digits_original)
  forget = digits_class0.forget
  result = unlearn("ga", original, forget=(forget.images, forget.labels), forget_classes=(0,),
                   seed=0)
  for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(digits_ga[0]), strict=True):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="splits/forget"):
    unlearn("ga", original, digits_class0, forget=forget, seed=0)
  with pytest.raises(ValueError, match="splits/forget"):
    unlearn("ga", original, seed=0)
  with pytest.raises(ValueError, match="needs retain data"):
    unlearn("ft", original, forget=forget, forget_classes=(0,), seed=0)


def test_the_default_perturbation_is_spotters_and_ou_adds_the_beta_filter():
  assert dataclasses.asdict(PerturbationConfig()) == PGD
  assert dataclasses.replace(EVAL_PGD, beta_quantile=None) == PerturbationConfig()
