"""Image-similarity scores for reconstruction attacks: PSNR and SSIM per image, by DeepMind's
``dm_pix`` (JAX), with this library's checks and window rule.

Both take batches [B, H, W, C] of images in [0, 1] (``data_range`` = 1) and return one score per
image. SSIM matches scikit-image's ``structural_similarity(x, y, gaussian_weights=True, sigma=σ,
use_sample_covariance=False, data_range=1, channel_axis=-1)`` (tests/test_image_metrics.py): a
Gaussian window of radius ⌊3.5σ + 0.5⌋ (11×11 for σ = 1.5, Wang et al. 2004), K1 = 0.01,
K2 = 0.03, and the SSIM map averaged over the pixels whose whole window lies inside the image,
then over channels.
"""

import dm_pix
import jax
import jax.numpy as jnp

K1, K2 = 0.01, 0.03
TRUNCATE = 3.5


def _check_pair(images: jax.Array, reference: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"images: expected shape [B, H, W, C], got {images.shape}.")
  if images.shape != reference.shape:
    raise ValueError(f"reference: expected the shape of images {images.shape}, "
                     f"got {reference.shape}.")


def psnr(images: jax.Array, reference: jax.Array, *, data_range: float = 1.0) -> jax.Array:
  """PSNR(x, x*) = 10 log₁₀(R² / MSE(x, x*)) in dB per image, MSE over H, W and C.

  Identical images give +inf (as scikit-image's ``peak_signal_noise_ratio``).

  Args:
    images: [B, H, W, C] reconstructions x in [0, data_range].
    reference: [B, H, W, C] true images x*.
    data_range: R, the value range of the images.

  Returns:
    [B] PSNR in dB.

  Raises:
    ValueError: shapes not [B, H, W, C] or not equal, or ``data_range`` ≤ 0.
  """
  _check_pair(images, reference)
  if data_range <= 0:
    raise ValueError(f"data_range: {data_range}; must be > 0.")
  # dm_pix's PSNR is for R = 1: 10 log₁₀(R²/MSE) = PSNR₁ + 20 log₁₀ R.
  return dm_pix.psnr(images.astype(jnp.float32), reference.astype(jnp.float32)) + (
      20.0 * jnp.log10(jnp.float32(data_range)))


def window_size(sigma: float) -> int:
  """2r + 1 taps, r = ⌊3.5σ + 0.5⌋ (SciPy's and so scikit-image's Gaussian truncation).

  >>> window_size(1.5), window_size(0.8)
  (11, 7)
  """
  return 2 * int(TRUNCATE * sigma + 0.5) + 1


def ssim(images: jax.Array, reference: jax.Array, *, sigma: float = 1.5,
         data_range: float = 1.0) -> jax.Array:
  """SSIM(x, y) = mean over pixels and channels of
  (2μ_xμ_y + C1)(2σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)), per image.

  Local moments are Gaussian-weighted (population covariance); C1 = (K1·R)², C2 = (K2·R)². Only
  pixels whose window lies wholly inside the image are averaged, so no padding rule is involved.

  Args:
    images: [B, H, W, C] reconstructions x in [0, data_range].
    reference: [B, H, W, C] true images y.
    sigma: σ of the Gaussian window (1.5 gives the standard 11×11 window).
    data_range: R, the value range of the images.

  Returns:
    [B] SSIM in [−1, 1] (1 for identical images).

  Raises:
    ValueError: shapes not [B, H, W, C] or not equal, ``sigma`` or ``data_range`` ≤ 0, or images
      smaller than the window (2·⌊3.5σ + 0.5⌋ + 1 pixels; pass a smaller ``sigma``, e.g. 0.8 gives
      7×7 for 8×8 images).
  """
  _check_pair(images, reference)
  if sigma <= 0:
    raise ValueError(f"sigma: {sigma}; must be > 0.")
  if data_range <= 0:
    raise ValueError(f"data_range: {data_range}; must be > 0.")
  size = window_size(sigma)
  if min(images.shape[1:3]) < size:
    raise ValueError(f"images: {images.shape[1]}×{images.shape[2]} pixels is smaller than the "
                     f"{size}×{size} window of sigma={sigma}; pass a smaller sigma.")
  return dm_pix.ssim(images.astype(jnp.float32), reference.astype(jnp.float32),
                     max_val=data_range, filter_size=size, filter_sigma=sigma, k1=K1, k2=K2)


__all__ = ["psnr", "ssim", "window_size"]
