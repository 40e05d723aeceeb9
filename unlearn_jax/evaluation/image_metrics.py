"""Image-similarity scores for reconstruction attacks: PSNR and SSIM, per image, pure JAX.

Both take batches [B, H, W, C] of images in [0, 1] (``data_range`` = 1) and return one score per
image. SSIM matches scikit-image's ``structural_similarity(x, y, gaussian_weights=True, sigma=σ,
use_sample_covariance=False, data_range=1, channel_axis=-1)``: a Gaussian window of radius
⌊3.5σ + 0.5⌋ (11×11 for σ = 1.5, Wang et al. 2004), K1 = 0.01, K2 = 0.03, and the SSIM map averaged
over the pixels whose whole window lies inside the image, then over channels.
"""

import jax
import jax.numpy as jnp
import numpy as np

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
  mse = jnp.mean(jnp.square(images - reference), axis=(1, 2, 3))
  return 10.0 * jnp.log10(data_range**2 / mse)


def gaussian_window(sigma: float) -> np.ndarray:
  """The normalised 1-D Gaussian w_t ∝ exp(−t²/2σ²), t = −r..r, r = ⌊3.5σ + 0.5⌋ (SciPy's)."""
  radius = int(TRUNCATE * sigma + 0.5)
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (t / sigma) ** 2)
  return (w / w.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, window: np.ndarray) -> jax.Array:
  """Separable 'valid' correlation of [B, H, W, C] with the window along H and W."""
  k = len(window)
  h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
  x = sum(float(window[t]) * x[:, t:t + h] for t in range(k))
  return sum(float(window[t]) * x[:, :, t:t + w] for t in range(k))


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
  window = gaussian_window(sigma)
  if min(images.shape[1:3]) < len(window):
    raise ValueError(f"images: {images.shape[1]}×{images.shape[2]} pixels is smaller than the "
                     f"{len(window)}×{len(window)} window of sigma={sigma}; pass a smaller sigma.")
  x = images.astype(jnp.float32)
  y = reference.astype(jnp.float32)
  mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
  var_x = _filter_valid(x * x, window) - mu_x * mu_x
  var_y = _filter_valid(y * y, window) - mu_y * mu_y
  cov = _filter_valid(x * y, window) - mu_x * mu_y
  c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
              / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)))
  return jnp.mean(ssim_map, axis=(1, 2, 3))


__all__ = ["gaussian_window", "psnr", "ssim"]
