"""What a fixed-α prototypical relearning edit depends on (docs/math.md §2.4): the cosine edit
writes a unit-norm row W[:, c], so at a fixed α its effect depends on the norms of the head's rows
(:func:`head_row_norms`; rescaling the head changes no prediction but moves the fixed-α attack),
and on how concentrated the forget features are (:func:`same_class_cosine`, Spotter's L_disp over
a whole set).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.models import Model, final_layer
from unlearn_jax.objectives.losses import safe_normalize


def head_row_norms(params, forget_classes: Sequence[int]) -> dict[str, float]:
  """‖W[:, c]‖₂ of the head's class rows: {"forget": mean over 𝒞_f, "kept": mean over the
  other classes}; with the prototype's unit norm they set how far a fixed-α edit moves s_c.

  Raises:
    ValueError: no ``head``, or class ids outside 0..C−1.
  """
  kernel, _ = final_layer(params)
  norms = np.linalg.norm(np.asarray(kernel, np.float64), axis=0)
  forget = np.zeros(len(norms), bool)
  classes = np.asarray(tuple(forget_classes), np.int64)
  if np.any((classes < 0) | (classes >= len(norms))):
    raise ValueError(f"forget_classes: {tuple(classes.tolist())} has ids outside "
                     f"0..{len(norms) - 1}.")
  forget[classes] = True
  return {"forget": float(norms[forget].mean()) if forget.any() else float("nan"),
          "kept": float(norms[~forget].mean()) if (~forget).any() else float("nan")}


@functools.partial(jax.jit, static_argnames="num_classes")
def same_class_cosine(features: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """Mean cos(z_i, z_j) over ordered same-class pairs i ≠ j: Spotter's L_disp (math.md §2.3) of a
  whole set, without its n×n Gram matrix.

  Per class c with unit rows ẑ_i (ε-guarded, so a zero row counts as cosine 0):
  Σ_{i≠j} cos = ‖Σ_i ẑ_i‖² − Σ_i ‖ẑ_i‖², over n_c(n_c − 1) pairs; classes are pooled as sums over
  counts. 1 for identical features, 0 for an orthonormal set.

  Args:
    features: Z [n, d]. labels: int [n]. num_classes: C.

  Returns:
    A scalar; 0 when no class has two examples.

  >>> same_class_cosine(jnp.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]), jnp.array([0, 0, 1]),
  ...                   num_classes=2).round(4)
  Array(1., dtype=float32)
  """
  unit = safe_normalize(features)
  sums = jax.ops.segment_sum(unit, labels, num_segments=num_classes)
  squares = jax.ops.segment_sum(jnp.sum(unit * unit, axis=-1), labels, num_segments=num_classes)
  counts = jax.ops.segment_sum(jnp.ones(labels.shape, unit.dtype), labels,
                               num_segments=num_classes)
  pairs = jnp.sum(counts * (counts - 1.0))
  return jnp.sum(jnp.sum(sums * sums, axis=-1) - squares) / jnp.maximum(pairs, 1.0)


def geometry(model: Model, params, sets, forget_classes) -> dict[str, float]:
  """θ_u's head row norms (:func:`head_row_norms`) and D_f feature cosine
  (:func:`same_class_cosine`); ``sets["forget"]`` = (features, labels) of D_f."""
  norms = head_row_norms(params, forget_classes)
  cosine = same_class_cosine(sets["forget"][0], sets["forget"][1], num_classes=model.num_classes)
  return {"head_norm_forget": norms["forget"], "head_norm_kept": norms["kept"],
          "forget_cosine": float(cosine)}


__all__ = ["geometry", "head_row_norms", "same_class_cosine"]
