"""Small models for CPU-scale experiments: a two-block CNN and an MLP.

Both return ``(features, logits)``: features are the penultimate activations, logits come from
the final Dense named ``head`` (kernel [d, C]). ``dtype``: the compute dtype of every layer but
the head ("float32" or "bfloat16"; parameters are float32 either way); the head computes in
float32 from float32 features, so the logits equal ``apply_head(params, features)``. Stage
activations are sown into ``intermediates`` (globally pooled, float32) for per-layer
representation metrics.
"""

from collections.abc import Sequence

import flax.linen as nn

from unlearn_jax.models.layers import (
  compute_dtype,
  global_avg_pool,
  max_pool_2x2,
  normalize,
  upcast,
)


class SmallCNN(nn.Module):
  """conv(c1)-relu-pool-conv(c2)-relu-pool-dense(d)-relu → head; no batch norm."""

  num_classes: int
  mean: Sequence[float]
  std: Sequence[float]
  channels: Sequence[int] = (32, 64)
  hidden: int = 128
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No batch norm or dropout.
    dtype = compute_dtype(self.dtype)
    x = normalize(x, self.mean, self.std, dtype)
    for i, c in enumerate(self.channels):
      x = nn.relu(nn.Conv(c, (3, 3), padding="SAME", dtype=dtype, name=f"conv{i + 1}")(x))
      x = max_pool_2x2(x)
      self.sow("intermediates", f"block{i + 1}", global_avg_pool(upcast(x)))
    x = x.reshape(x.shape[0], -1)
    features = upcast(nn.relu(nn.Dense(self.hidden, dtype=dtype, name="dense")(x)))
    return features, nn.Dense(self.num_classes, name="head")(features)


class MLP(nn.Module):
  """Flatten → [dense-relu]×L → head; no batch norm."""

  num_classes: int
  mean: Sequence[float]
  std: Sequence[float]
  hidden: Sequence[int] = (256, 128)
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    dtype = compute_dtype(self.dtype)
    x = normalize(x, self.mean, self.std, dtype).reshape(x.shape[0], -1)
    for i, h in enumerate(self.hidden):
      x = nn.relu(nn.Dense(h, dtype=dtype, name=f"dense{i + 1}")(x))
      if i < len(self.hidden) - 1:
        self.sow("intermediates", f"hidden{i + 1}", upcast(x))
    x = upcast(x)
    return x, nn.Dense(self.num_classes, name="head")(x)
