"""Per-example memorization from a population of models on random halves (Feldman & Zhang,
NeurIPS 2020; as RUM estimates it, Zhao et al., NeurIPS 2024, kairanzhao/RUM
``surgical_plugins/cifar_infl_mem_torch.py``; docs/math.md §7.8).

mem(i) = Pr[h_S(x_i) = y_i | i ∈ S] − Pr[h_S(x_i) = y_i | i ∉ S], estimated over M models each
trained on its own random subset S_m of the pool: the mean correctness of the models that trained
on i minus that of the models that did not. mem ≈ 0: the example is classified as well without it
(typical); mem ≈ 1: only the models that saw it get it right (memorized, e.g. atypical or
mislabelled). RUM trains its models on 70 % subsets; here they are the balanced halves of
:func:`unlearn_jax.data.memberships.balanced_masks` (each example IN for exactly M/2 models).
"""

import numpy as np


def memorization_scores(correct: np.ndarray, members: np.ndarray, *, min_models: int = 1
                        ) -> np.ndarray:
  """mem(i) per example (module docstring); NaN where fewer than ``min_models`` models trained on
  i or fewer than ``min_models`` did not (too few to estimate either side).

  Args:
    correct: [M, N] bool, model m classifies pool example i correctly.
    members: [M, N] bool, model m trained on example i.
    min_models: models needed on each side.

  Returns:
    [N] float64 in [−1, 1] (or NaN).

  Raises:
    ValueError: shapes differ or are not [M, N], or min_models < 1.
  """
  correct, members = np.asarray(correct, bool), np.asarray(members, bool)
  if correct.shape != members.shape or correct.ndim != 2:
    raise ValueError(f"correct/members: expected two [models, examples] arrays of one shape, "
                     f"got {correct.shape} and {members.shape}.")
  if min_models < 1:
    raise ValueError(f"min_models: {min_models}; need ≥ 1.")
  n_in, n_out = members.sum(axis=0), (~members).sum(axis=0)
  valid = (n_in >= min_models) & (n_out >= min_models)
  with np.errstate(invalid="ignore", divide="ignore"):
    acc_in = np.sum(correct & members, axis=0) / n_in
    acc_out = np.sum(correct & ~members, axis=0) / n_out
  return np.where(valid, acc_in - acc_out, np.nan)


def describe(scores: np.ndarray) -> dict:
  """{"examples", "min", "mean", "max", "q50", "q90"} of the finite scores (None if none)."""
  scores = np.asarray(scores, np.float64)
  scores = scores[np.isfinite(scores)]
  if scores.size == 0:
    return {"examples": 0, "min": None, "mean": None, "max": None, "q50": None, "q90": None}
  return {"examples": int(scores.size), "min": float(scores.min()), "mean": float(scores.mean()),
          "max": float(scores.max()), "q50": float(np.quantile(scores, 0.5)),
          "q90": float(np.quantile(scores, 0.9))}


__all__ = ["describe", "memorization_scores"]
