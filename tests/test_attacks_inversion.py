"""Gradient inversion: its pieces against known answers, batch = loop, and reconstruction of real
digits from the original model's gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.evaluation.image_metrics import psnr
from unlearn_jax.evaluation.inversion import (
  BATCH_SIZE,
  InversionConfig,
  default_batch_size,
  gradient_cosine,
  gradient_inversion,
  inversion_bounds,
  invert,
  parameter_difference,
  parameter_gradient,
  ssim_sigma,
  total_variation,
)

FAST = InversionConfig(iterations=300, restarts=1, learning_rate=0.1)


@pytest.fixture(scope="module")
def class0(digits_class0):
  return digits_class0


@pytest.fixture(scope="module")
def targets(class0):
  return class0.forget.subset(np.arange(6))


def test_total_variation_matches_naive_sum():
  x = np.random.default_rng(0).uniform(size=(5, 4, 2)).astype(np.float32)
  naive = sum(abs(x[i + 1, j, c] - x[i, j, c]) for i in range(4) for j in range(4)
              for c in range(2))
  naive += sum(abs(x[i, j + 1, c] - x[i, j, c]) for i in range(5) for j in range(3)
               for c in range(2))
  np.testing.assert_allclose(total_variation(jnp.asarray(x)), naive, rtol=1e-5)
  assert total_variation(jnp.full((4, 4, 1), 0.3)) == 0.0


def test_gradient_cosine():
  g = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[3.0]])}
  np.testing.assert_allclose(gradient_cosine(g, g), 1.0, rtol=1e-6)
  np.testing.assert_allclose(gradient_cosine(g, jax.tree.map(lambda v: -2 * v, g)), -1.0,
                             rtol=1e-6)
  other = {"a": jnp.array([2.0, -1.0]), "b": jnp.array([[0.0]])}
  np.testing.assert_allclose(gradient_cosine(g, other), 0.0, atol=1e-7)
  zero = jax.tree.map(jnp.zeros_like, g)
  assert gradient_cosine(g, zero) == 0.0
  assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(jax.grad(gradient_cosine)(zero, g)))


@pytest.fixture(scope="module")
def reconstruction(digits_model, digits_original, targets):
  """The batched attack on θ_o: all images and restarts in one jitted program."""
  return gradient_inversion(digits_model, *digits_original, targets, seed=0, config=FAST,
                            batch_size=len(targets))


def test_head_gradient_is_outer_product(digits_model, digits_original, targets):
  """∇_W CE = z (p − e_y)ᵀ and ∇_b CE = p − e_y for the head (Flax kernel [d, C])."""
  params, state = digits_original
  x, y = jnp.asarray(targets.images[0]), jnp.asarray(targets.labels[0])
  grads = jax.jit(parameter_gradient, static_argnums=0)(digits_model, params, state, x, y)
  z, logits, _ = digits_model.apply(params, state, x[None])
  residual = jax.nn.softmax(logits[0]) - jax.nn.one_hot(y, logits.shape[-1])
  np.testing.assert_allclose(grads["head"]["kernel"], jnp.outer(z[0], residual), atol=1e-6)
  np.testing.assert_allclose(grads["head"]["bias"], residual, atol=1e-6)


def test_reconstructs_digits_from_original_gradients(reconstruction, targets):
  result = reconstruction
  print(f"\ninversion of θ_o on {len(targets)} digits: PSNR {result['psnr_mean']:.1f} dB "
        f"(random start images {result['init_psnr_mean']:.1f} dB), SSIM "
        f"{result['ssim_mean']:.2f} (σ = {result['ssim_sigma']:.2f})")
  assert result["reconstructions"].shape == targets.images.shape
  assert result["reconstructions"].min() >= 0.0 and result["reconstructions"].max() <= 1.0
  assert result["psnr_mean"] >= 18.0
  assert result["psnr_mean"] >= result["init_psnr_mean"] + 10.0
  assert result["ssim_mean"] >= 0.7


def test_batch_equals_loop(digits_model, digits_original, targets, reconstruction):
  """batch_size=1 (the default on CPU, where it is the faster form) runs one jitted call per
  image: the same starts, and images that agree up to float reassociation (batched and
  single-image convolutions sum in different orders, and 300 signed steps carry the last-bit
  differences a little further)."""
  assert default_batch_size() == (1 if jax.default_backend() == "cpu" else BATCH_SIZE)
  loop = gradient_inversion(digits_model, *digits_original, targets, seed=0, config=FAST)
  np.testing.assert_array_equal(loop["init_psnr"], reconstruction["init_psnr"])
  np.testing.assert_allclose(loop["reconstructions"], reconstruction["reconstructions"],
                             atol=0.05)
  np.testing.assert_allclose(loop["loss"], reconstruction["loss"], atol=2e-3)


def test_bounds_share_starts(digits_model, digits_original, targets):
  params, state = digits_original
  rng = np.random.default_rng(1)
  noisy = jax.tree.map(lambda p: p + 0.05 * rng.normal(size=p.shape).astype(p.dtype), params)
  result = inversion_bounds(digits_model, {"original": (params, state), "noisy": (noisy, state)},
                            targets.subset(np.arange(2)), seed=0, config=FAST, batch_size=1)
  assert set(result) == {"original", "noisy"}
  np.testing.assert_array_equal(result["original"]["init_psnr"], result["noisy"]["init_psnr"])
  assert not np.allclose(result["original"]["reconstructions"],
                         result["noisy"]["reconstructions"])


def test_parameter_difference_reconstructs_class_average(digits_model, digits_original, class0,
                                                         digits_ga):
  """Variant B on a gradient-ascent model: θ_u − θ_o points along +∇CE(D_f), so it is matched
  (low loss, an image near the class-0 mean); the opposite sign θ_o − θ_u is not."""
  params, state = digits_ga
  difference = parameter_difference(params, digits_original[0])
  labels = jnp.zeros(2, jnp.int32)
  keys = jax.random.split(jax.random.key(0), 2)
  config = InversionConfig(iterations=300, restarts=2, learning_rate=0.1)
  run = jax.jit(lambda g: invert(digits_model, params, state, g, labels, keys, config,
                                 shared_target=True))
  images, loss, starts = run(difference)
  _, flipped_loss, _ = run(jax.tree.map(jnp.negative, difference))
  mean = jnp.broadcast_to(jnp.asarray(class0.forget.images.mean(0)), images.shape)
  to_mean, start = float(jnp.mean(psnr(images, mean))), float(jnp.mean(psnr(starts, mean)))
  print(f"\nvariant B: loss {float(loss.mean()):.3f} (θ_o − θ_u: "
        f"{float(flipped_loss.mean()):.3f}), PSNR to the class-0 mean {to_mean:.1f} dB "
        f"(start {start:.1f} dB)")
  assert float(loss.mean()) < 0.3 < float(flipped_loss.mean())
  assert to_mean >= start + 5.0


def test_ssim_sigma_fits_the_image():
  assert ssim_sigma((32, 32, 3)) == 1.5
  assert 2 * int(3.5 * ssim_sigma((8, 8, 1)) + 0.5) + 1 <= 8


def test_bad_inputs_name_the_field(digits_model, digits_original, targets):
  params, state = digits_original
  with pytest.raises(ValueError, match="data: no target image"):
    gradient_inversion(digits_model, params, state, targets.subset(np.arange(0)), seed=0)
  with pytest.raises(ValueError, match="target: 'weights'"):
    gradient_inversion(digits_model, params, state, targets, seed=0, target="weights")
  with pytest.raises(ValueError, match="original_params: target='difference' needs"):
    gradient_inversion(digits_model, params, state, targets, seed=0, target="difference")
  with pytest.raises(ValueError, match="original_params: its shapes differ"):
    gradient_inversion(digits_model, params, state, targets, seed=0, target="difference",
                       original_params={"head": params["head"]})
  with pytest.raises(ValueError, match="inversion.iterations: 0"):
    gradient_inversion(digits_model, params, state, targets, seed=0,
                       config=InversionConfig(iterations=0))
  with pytest.raises(ValueError, match="inversion.learning_rate"):
    InversionConfig(learning_rate=-1.0).validate()
  with pytest.raises(ValueError, match="images: model 'small_cnn' expects"):
    gradient_inversion(digits_model, params, state,
                       ArrayDataset(np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int32)),
                       seed=0)
