"""Models: one interface (features, logits, state), input checks, fast pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.models import apply_head, make_model
from unlearn_jax.models.layers import max_pool_2x2
from unlearn_jax.objectives.classifier import WEIGHTS, classifier_objective
from unlearn_jax.optim import make_optimizer
from unlearn_jax.training.state import create_train_state
from unlearn_jax.training.step import make_train_step

STATS = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


@pytest.mark.parametrize("name, dim", [("small_cnn", 128), ("mlp", 128), ("resnet18", 512)])
def test_outputs_features_and_logits(name, dim):
  model = make_model(name, num_classes=7, input_shape=(16, 16, 3), **STATS)
  params, state = model.init(jax.random.key(0))
  images = jax.random.uniform(jax.random.key(1), (3, 16, 16, 3))
  features, logits, _ = jax.jit(model.apply)(params, state, images)
  assert features.shape == (3, dim) and logits.shape == (3, 7)
  np.testing.assert_allclose(apply_head(params, features), logits, rtol=1e-5, atol=1e-5)
  assert model.feature_dim == dim


def test_resnet18_is_the_cifar_variant():
  model = make_model("resnet18", num_classes=10, input_shape=(32, 32, 3), **STATS)
  params, state = jax.eval_shape(model.init, jax.random.key(0))
  assert sum(x.size for x in jax.tree.leaves(params)) == 11_173_962
  assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 64)  # 3×3 stem, no max-pool
  assert model.blocks(params)[-2] == ["layer4_0", "layer4_1"]
  half = make_model("resnet18", num_classes=10, input_shape=(32, 32, 3), width=0.5, **STATS)
  assert half.feature_dim == 256


def test_batch_norm_mode_is_explicit():
  model = make_model("resnet18", num_classes=4, input_shape=(8, 8, 3), width=0.125, **STATS)
  params, state = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
  _, train_logits, new_state = jax.jit(model.apply, static_argnames="train")(
      params, state, x, train=True)
  _, eval_logits, same_state = model.apply(params, state, x, train=False)
  assert same_state is state
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_state, state)
  assert any(jax.tree.leaves(changed))
  assert not np.allclose(train_logits, eval_logits)


def test_normalisation_inside_uses_the_given_stats():
  a = make_model("mlp", num_classes=3, input_shape=(2, 2, 1), mean=(0.0,), std=(1.0,))
  b = make_model("mlp", num_classes=3, input_shape=(2, 2, 1), mean=(0.5,), std=(2.0,))
  params, state = a.init(jax.random.key(0))
  x = jnp.full((1, 2, 2, 1), 0.9)
  np.testing.assert_allclose(b.apply(params, state, x)[1],
                             a.apply(params, state, (x - 0.5) / 2.0)[1], rtol=1e-6)


def test_wrong_image_shape_names_the_field():
  model = make_model("small_cnn", num_classes=10, input_shape=(8, 8, 1), mean=(0.5,), std=(0.3,))
  params, state = model.init(jax.random.key(0))
  expected = r"images: model 'small_cnn' expects shape \[batch, 8, 8, 1\]"
  with pytest.raises(ValueError, match=expected):
    model.apply(params, state, jnp.zeros((2, 28, 28, 1)))


def test_unknown_model_and_option():
  with pytest.raises(ValueError, match="model.name: unknown model 'vgg'.*resnet18"):
    make_model("vgg", num_classes=2, input_shape=(8, 8, 1), mean=(0.,), std=(1.,))
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['depth'\]"):
    make_model("mlp", num_classes=2, input_shape=(8, 8, 1), mean=(0.,), std=(1.,), depth=3)


def test_reshape_max_pool_equals_reduce_window_in_value_and_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))

  def reference(y):
    return nn.max_pool(y, (2, 2), strides=(2, 2))

  np.testing.assert_array_equal(max_pool_2x2(x), reference(x))
  g = jax.grad(lambda y: jnp.sum(jnp.sin(max_pool_2x2(y))))(x)
  g_ref = jax.grad(lambda y: jnp.sum(jnp.sin(reference(y))))(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6)


def test_stage_features_per_block():
  model = make_model("resnet18", num_classes=4, input_shape=(8, 8, 3), width=0.125, **STATS)
  params, state = model.init(jax.random.key(0))
  stages = model.stage_features(params, state, jnp.zeros((2, 8, 8, 3)))
  assert list(stages) == ["layer1", "layer2", "layer3", "layer4", "penultimate"]
  assert stages["layer4"].shape == (2, 64)


def _ce_batch(images, labels) -> dict:
  return {"train": {"image": images, "label": labels, "mask": np.ones(len(labels), np.float32)}}


@pytest.mark.parametrize("name, options", [("small_cnn", {}), ("mlp", {}),
                                           ("resnet18", {"width": 0.125})])
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state(name, options):
  """Mixed precision (``dtype="bfloat16"``): the layers compute in bfloat16, while parameters,
  optimiser state, batch-norm statistics, gradients, features, logits, the loss and the metrics
  of a train step stay float32 (traced, not compiled)."""
  model = make_model(name, num_classes=10, input_shape=(8, 8, 3), dtype="bfloat16", **STATS,
                     **options)
  tx = make_optimizer("sgd", learning_rate=0.1, momentum=0.9)
  params, model_state = jax.eval_shape(model.init, jax.random.key(0))
  images = jax.ShapeDtypeStruct((4, 8, 8, 3), jnp.float32)
  assert "bf16" in str(jax.make_jaxpr(model.apply)(params, model_state, images))
  state = jax.eval_shape(lambda p, s: create_train_state(p, s, tx), params, model_state)
  batch = _ce_batch(np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int32))
  out = jax.eval_shape(make_train_step(classifier_objective(model), tx), state, batch,
                       jax.random.key(1), {"weights": WEIGHTS})
  outputs = jax.eval_shape(model.apply, params, model_state, images)
  kept = jax.tree.leaves((out, outputs))
  assert {x.dtype for x in kept} <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}
  if name == "resnet18":
    assert jax.tree.leaves(out[0].model_state) and "grad_norm" in out[1]
  with pytest.raises(ValueError, match=r"model.options.dtype: 'float16'; allowed: float32, "
                                       r"bfloat16"):
    make_model(name, num_classes=10, input_shape=(8, 8, 3), dtype="float16", **STATS)


def test_bfloat16_step_is_within_tolerance_of_float32(digits):
  """One CE step of the small CNN on real digits: bfloat16 compute changes the numbers, the loss
  by at most 1 % and the gradient by at most 5 % (relative L2 error) of float32's."""
  batch = _ce_batch(digits.train.images[:64], digits.train.labels[:64])
  results = {}
  for dtype in ("float32", "bfloat16"):
    model = make_model("small_cnn", num_classes=10, input_shape=digits.image_shape,
                       mean=digits.mean, std=digits.std, dtype=dtype)
    params, model_state = model.init(jax.random.key(0))
    grad_fn = jax.jit(jax.value_and_grad(classifier_objective(model), has_aux=True))
    (loss, _), grads = grad_fn(params, model_state, batch, jax.random.key(1), {"weights": WEIGHTS})
    results[dtype] = float(loss), np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)])
  (loss32, g32), (loss16, g16) = results["float32"], results["bfloat16"]
  assert abs(loss16 - loss32) <= 0.01 * loss32 and loss16 != loss32
  assert 0 < np.linalg.norm(g16 - g32) <= 0.05 * np.linalg.norm(g32)
