"""Membership masks of model populations: which pool examples each model trains on.

LiRA-style attacks (docs/math.md §7.3, §7.5) need every example IN for exactly half of the models; a
vmapped population also needs every model to run the same number of steps, so every model's half
must have the same size. :func:`balanced_masks` gives both.
"""

import numpy as np

from unlearn_jax import seeding


def balanced_masks(num_models: int, num_examples: int, *, seed: int,
                   strata: np.ndarray | None = None) -> np.ndarray:
  """Training masks, bool [M, N]: every example IN for exactly M/2 models (LiRA's balance), and
  every model's half of each stratum the same size (so every model runs the same steps).

  Examples are paired at random within each stratum (e.g. target set vs the rest of the pool).
  Per pair (a, b), LiRA's construction ranks a uniform [M] vector and puts a IN where the rank
  < M/2, and b IN for the other M/2 models; an unpaired last example of a stratum is ranked alone.
  So each model holds one example of every pair: ⌊N_s/2⌋ or ⌈N_s/2⌉ of stratum s.

  Args:
    num_models: M, even.
    num_examples: N (the pool size).
    seed: the pairing and the ranks are functions of it alone.
    strata: optional int [N]: pairs never cross strata.

  Raises:
    ValueError: M odd or < 2, or ``strata`` not [N].
  """
  if num_models < 2 or num_models % 2:
    raise ValueError(f"num_models: {num_models}; balanced halves need an even count ≥ 2.")
  strata = np.zeros(num_examples, np.int64) if strata is None else np.asarray(strata)
  if strata.shape != (num_examples,):
    raise ValueError(f"strata: shape {strata.shape}, expected ({num_examples},).")
  rng = seeding.host_rng(seed, "balanced_masks")
  masks = np.zeros((num_models, num_examples), bool)
  for s in np.unique(strata):
    order = rng.permutation(np.flatnonzero(strata == s))
    pairs = len(order) // 2
    ranks = np.argsort(np.argsort(rng.random((num_models, len(order) - pairs)), axis=0), axis=0)
    inside = ranks < num_models // 2
    masks[:, order[0:2 * pairs:2]] = inside[:, :pairs]
    masks[:, order[1:2 * pairs:2]] = ~inside[:, :pairs]
    masks[:, order[2 * pairs:]] = inside[:, pairs:]
  return masks


__all__ = ["balanced_masks"]
