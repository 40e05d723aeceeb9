"""CIFAR ResNet-18 (He et al., 2016) as in the Spotter reference code (docs/math.md §1.3).

3×3 stem conv (stride 1, no bias) + BN + ReLU and no max-pool; BasicBlock stages [2, 2, 2, 2]
of widths (64, 128, 256, 512)·width with strides (1, 2, 2, 2) and 1×1 conv + BN projection
shortcuts; global average pooling gives the features (512·width), then ``head``. Conv kernels
are Kaiming-normal (fan_out), the head N(0, 0.01²) with zero bias. Batch norm uses batch
statistics and updates running averages when ``train=True`` (PyTorch momentum 0.1).
``dtype``: the compute dtype of convolutions and batch norm ("float32" or "bfloat16"); parameters
and batch-norm statistics stay float32 (Flax reduces batch statistics in float32), the features
are returned in float32 and the head computes in float32.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn

from unlearn_jax.models.layers import compute_dtype, global_avg_pool, normalize, upcast

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nn.Module):
  """relu(shortcut(x) + BN(conv3×3(relu(BN(conv3×3_stride(x)))))); the shortcut is a 1×1
  convolution + BN where the stride or width changes, else the identity."""

  features: int
  stride: int
  norm: type
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    conv = partial(nn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
    y = nn.relu(self.norm()(conv(self.features, (3, 3), self.stride, padding=1)(x)))
    y = self.norm()(conv(self.features, (3, 3), 1, padding=1)(y))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = self.norm()(conv(self.features, (1, 1), self.stride)(x))
    return nn.relu(x + y)


def stage_groups(stage_sizes: Sequence[int]) -> tuple[tuple[str, ...], ...]:
  """CF-k / EU-k's blocks in forward order: the stem, each stage, the head (k = 2: layer4 +
  head, as in the SCRUB notebook)."""
  stages = (tuple(f"layer{i + 1}_{j}" for j in range(n)) for i, n in enumerate(stage_sizes))
  return (("stem_conv", "stem_bn"), *stages, ("head",))


class ResNet18(nn.Module):
  """CIFAR ResNet-18 (docs/math.md §1.3): x ∈ [0, 1] [B, H, W, 3] → (features [B, 512·width],
  logits [B, num_classes]); stage outputs are sown as ``intermediates`` ``layer1``–``layer4``."""

  num_classes: int
  mean: Sequence[float]
  std: Sequence[float]
  width: float = 1.0
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    dtype = compute_dtype(self.dtype)
    norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                   dtype=dtype)
    widths = [int(round(w * self.width)) for w in (64, 128, 256, 512)]
    x = normalize(x, self.mean, self.std, dtype)
    x = nn.Conv(widths[0], (3, 3), padding=1, use_bias=False, kernel_init=_conv_init,
                dtype=dtype, name="stem_conv")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    for i, (size, w) in enumerate(zip(self.stage_sizes, widths, strict=True)):
      for j in range(size):
        stride = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(w, stride, norm, dtype, name=f"layer{i + 1}_{j}")(x)
      self.sow("intermediates", f"layer{i + 1}", global_avg_pool(upcast(x)))
    features = global_avg_pool(upcast(x))
    head = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), name="head")
    return features, head(features)
