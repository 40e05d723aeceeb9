"""PSNR and SSIM (dm_pix underneath) against scikit-image, the oracle, on real photographs
(scikit-learn's sample images)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.datasets import load_sample_images

from unlearn_jax.evaluation.image_metrics import psnr, ssim, window_size


@pytest.fixture(scope="module")
def photos():
  """Two real 64×64 RGB crops (2× box-downscaled) and noisy / blurred / shifted versions."""
  crops = [im[100:228, 200:328].reshape(64, 2, 64, 2, 3).mean(axis=(1, 3)) / 255.0
           for im in load_sample_images().images]
  clean = np.stack(crops).astype(np.float32)
  rng = np.random.default_rng(0)
  noisy = np.clip(clean + rng.normal(0.0, 0.1, clean.shape), 0, 1).astype(np.float32)
  dark = (0.6 * clean).astype(np.float32)
  shifted = np.roll(clean, 3, axis=2)
  return clean, np.concatenate([noisy, dark, shifted]), np.concatenate([clean] * 3)


def _skimage_ssim(x, y, sigma):
  return np.array([structural_similarity(a, b, gaussian_weights=True, sigma=sigma,
                                         use_sample_covariance=False, data_range=1.0,
                                         channel_axis=-1) for a, b in zip(x, y, strict=True)])


@pytest.mark.floors
@pytest.mark.parametrize("sigma", [1.5, 0.8])
def test_ssim_matches_skimage(photos, sigma):
  _, distorted, reference = photos
  ours = np.asarray(jax.jit(ssim, static_argnames="sigma")(distorted, reference, sigma=sigma))
  np.testing.assert_allclose(ours, _skimage_ssim(distorted, reference, sigma), atol=1e-5)
  assert np.ptp(ours) > 0.1  # the distortions really differ


def test_ssim_grey_single_channel_matches_skimage(photos):
  _, distorted, reference = photos
  grey_d, grey_r = distorted.mean(-1, keepdims=True), reference.mean(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(ssim(grey_d, grey_r)),
                             _skimage_ssim(grey_d, grey_r, 1.5), atol=1e-3)


def test_ssim_identical_is_one(photos):
  clean, _, _ = photos
  np.testing.assert_allclose(np.asarray(ssim(clean, clean)), 1.0, atol=1e-5)


@pytest.mark.floors
def test_psnr_matches_skimage(photos):
  _, distorted, reference = photos
  expected = [peak_signal_noise_ratio(r, d, data_range=1.0)
              for d, r in zip(distorted, reference, strict=True)]
  np.testing.assert_allclose(np.asarray(jax.jit(psnr)(distorted, reference)), expected,
                             atol=1e-3)


def test_psnr_known_value_and_identical():
  x = jnp.zeros((2, 4, 4, 1))
  y = x.at[0].set(0.1)  # MSE 0.01 → 20 dB
  out = np.asarray(psnr(y, x))
  np.testing.assert_allclose(out[0], 20.0, atol=1e-4)
  assert out[1] == np.inf


def test_psnr_of_another_data_range_matches_skimage(photos):
  _, distorted, reference = photos
  expected = [peak_signal_noise_ratio(2 * r, 2 * d, data_range=2.0)
              for d, r in zip(distorted, reference, strict=True)]
  np.testing.assert_allclose(np.asarray(psnr(2 * distorted, 2 * reference, data_range=2.0)),
                             expected, atol=1e-3)


def test_window_is_11_taps_for_sigma_1_5():
  assert window_size(1.5) == 11 and window_size(0.8) == 7


@pytest.mark.parametrize("call, field", [
    (lambda: ssim(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 1))), "images"),
    (lambda: ssim(jnp.zeros((1, 16, 16, 1)), jnp.zeros((1, 16, 16, 3))), "reference"),
    (lambda: ssim(jnp.zeros((16, 16, 1)), jnp.zeros((16, 16, 1))), "images"),
    (lambda: ssim(jnp.zeros((1, 16, 16, 1)), jnp.zeros((1, 16, 16, 1)), sigma=0), "sigma"),
    (lambda: psnr(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 4, 4, 1)), data_range=0), "data_range"),
])
def test_bad_inputs_name_the_field(call, field):
  with pytest.raises(ValueError, match=field):
    call()


def test_small_images_work_with_a_smaller_window():
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 8, 8, 1)), jnp.float32)
  y = jnp.clip(x + 0.05, 0, 1)
  np.testing.assert_allclose(np.asarray(ssim(y, x, sigma=0.8)),
                             _skimage_ssim(np.asarray(y), np.asarray(x), 0.8), atol=1e-3)
