"""The NeurIPS 2023 Machine Unlearning Challenge's forgetting quality F and final score
(docs/math.md §7.2; google-deepmind/unlearning_evaluation, Triantafillou et al., 2023), and the
logit-scaled confidence φ they and the population attacks read (§7.1).

Per forget example j the scorer asks how well any threshold rule separates the M unlearned
models' confidences on j from the M retrained models'. A rule's true/false positive and negative
rates give a privacy-style ε_j; F averages 2^(−bucket(ε_j)) over the forget set, so F = 1 means
no rule tells the two populations apart.

The vectorised implementation counts, for every threshold of every example at once, how many
models fall below it (one binary search over all examples' sorted confidences), so its rates are
exact counts: the same numbers as a per-threshold loop. Departures from the published code: it
asserts on a NumPy array (raising whenever more than one threshold survives) and fails when no
threshold survives, where here such an example gets ε = 0 (no rule separates the populations);
its single-threshold grid is float32 (``torch.linspace``'s default), here float64 like the rest.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0  # b: the interval rule's slack around the peakier population, in confidence units
PEAKINESS = 0.01
BUCKET = 0.5


def logit_confidence(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """φ = z_y − logsumexp_{k≠y} z_k = log p_y − log Σ_{k≠y} p_k (math.md §7.1), float32, jit-able.

  Exact in float32 without clipping (no softmax is formed), unlike the published c (below).

  Args:
    logits: [..., C] float.
    labels: [...] int, the true classes y.

  Returns:
    φ, [...] float32.

  Raises:
    ValueError: ``labels`` not shaped like ``logits`` without its last axis.

  >>> float(logit_confidence(jnp.array([[2.0, 0.0]]), jnp.array([0]))[0])
  2.0
  """
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels: shape {labels.shape}, expected {logits.shape[:-1]} (logits "
                     f"{logits.shape} without the class axis).")
  logits = logits.astype(jnp.float32)
  is_y = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  z_y = jnp.sum(jnp.where(is_y, logits, 0.0), axis=-1)
  return z_y - jax.nn.logsumexp(jnp.where(is_y, -jnp.inf, logits), axis=-1)


def scorer_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The published c = log(p_y + 1e-45) − log(Σ_{k≠y} p_k + 1e-45), softmax in float64 after
  subtracting the largest logit (docs/math.md §7.2). Equals φ unless a probability underflows.

  Args:
    logits: [N, C] float.
    labels: [N] int.

  Returns:
    c, [N] float64.
  """
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - np.max(logits, axis=1, keepdims=True))
  probs /= np.sum(probs, axis=1, keepdims=True)
  is_y = np.arange(logits.shape[1])[None, :] == np.asarray(labels)[:, None]
  p_y = np.sum(np.where(is_y, probs, 0.0), axis=1)
  p_rest = np.sum(np.where(is_y, 0.0, probs), axis=1)
  return np.log(p_y + 1e-45) - np.log(p_rest + 1e-45)


def _linspace_rows(start: np.ndarray, stop: np.ndarray, num: np.ndarray, width: int) -> np.ndarray:
  """Row i = np.linspace(start[i], stop[i], num[i]) padded with NaN to ``width`` columns."""
  out = np.full((len(start), width), np.nan)
  for i, (a, b, n) in enumerate(zip(start, stop, num, strict=True)):
    out[i, :n] = np.linspace(a, b, n)
  return out


def _count_below(sorted_values: np.ndarray, x: np.ndarray, *, inclusive: bool) -> np.ndarray:
  """#{m : v[e, m] < x[e, ...]} (≤ if ``inclusive``) for every example e and threshold at once.

  One ``np.searchsorted`` over the complex keys e + i·v[e, m], which NumPy orders
  lexicographically (example first, then value): exact, since neither part is rounded.
  ``sorted_values`` [E, M] ascending per row; a NaN threshold gives a meaningless count (mask it).
  """
  num_examples, num_models = sorted_values.shape
  rows = np.arange(num_examples, dtype=np.float64)[:, None]
  flat = x.reshape(num_examples, -1)
  position = np.searchsorted((rows + 1j * sorted_values).ravel(), (rows + 1j * flat).ravel(),
                             side="right" if inclusive else "left")
  start = np.arange(num_examples, dtype=np.int64)[:, None] * num_models
  return (position.reshape(flat.shape) - start).reshape(x.shape)


def _epsilons_of_rates(fp, fn, num_pos, num_neg, delta: float) -> np.ndarray:
  """ε per threshold from counts, NaN for a discarded threshold (docs/math.md §7.2 step 4).

  ε_t = ∞ when FPR = FNR = 0; discarded when exactly one of them is 0 (too few samples); else
  max(0, log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR), a term whose log argument is
  not positive being left out (both out: discarded).
  """
  fpr, fnr = fp / num_neg, fn / num_pos
  with np.errstate(divide="ignore", invalid="ignore"):
    a = np.log(1 - delta - fpr) - np.log(fnr)
    b = np.log(1 - delta - fnr) - np.log(fpr)
  eps = np.maximum(np.fmax(a, b), 0.0)  # fmax ignores one NaN; NaN stays when both are NaN
  eps = np.where((fp == 0) | (fn == 0), np.nan, eps)
  return np.where((fp == 0) & (fn == 0), np.inf, eps)


def _chunk_epsilons(pos: np.ndarray, neg: np.ndarray, delta: float) -> np.ndarray:
  """ε before the cap for E examples: ``pos``, ``neg`` [E, M] (the larger-median population
  first), both threshold families, every threshold at once."""
  num_models = pos.shape[1]
  pos_sorted, neg_sorted = np.sort(pos, axis=1), np.sort(neg, axis=1)

  # Single threshold t on a grid over all 2M confidences; predict positive when c ≥ t.
  lo = np.minimum(pos_sorted[:, 0], neg_sorted[:, 0])
  hi = np.maximum(pos_sorted[:, -1], neg_sorted[:, -1])
  num = np.ceil((hi - lo) * THRESHOLDS_PER_UNIT).astype(np.int64)
  t = _linspace_rows(lo, hi, num, max(int(num.max()), 1))
  fn = _count_below(pos_sorted, t, inclusive=False)
  fp = num_models - _count_below(neg_sorted, t, inclusive=False)
  single = np.where(np.isnan(t), np.nan, _epsilons_of_rates(fp, fn, num_models, num_models,
                                                            delta))

  # Interval [l, r], positive = the peakier population (smaller range w; the negative one on a
  # tie, as published); predict positive when l ≤ c ≤ r.
  pos_range = pos_sorted[:, -1] - pos_sorted[:, 0]
  neg_range = neg_sorted[:, -1] - neg_sorted[:, 0]
  swap = pos_range >= neg_range
  peaky = np.where(swap[:, None], neg_sorted, pos_sorted)
  other = np.where(swap[:, None], pos_sorted, neg_sorted)
  width = np.minimum(pos_range, neg_range)
  r_lo = peaky[:, 0] + width - BUFFER
  r_hi = peaky[:, -1] + BUFFER
  num_r = np.ceil((r_hi - r_lo) * THRESHOLDS_PER_UNIT).astype(np.int64)
  r = _linspace_rows(r_lo, r_hi, num_r, int(num_r.max()))  # [E, R]
  num_l = int(math.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
  l = np.linspace(r - width[:, None] - BUFFER, r - width[:, None] + BUFFER, num_l, axis=-1)

  def inside(sorted_values):  # #{l ≤ c ≤ r}, [E, R, L]
    upto_r = _count_below(sorted_values, r, inclusive=True)[:, :, None]
    return np.maximum(upto_r - _count_below(sorted_values, l, inclusive=False), 0)

  tp, fp = inside(peaky), inside(other)
  interval = _epsilons_of_rates(fp, num_models - tp, num_models, num_models, delta)
  interval = np.where(np.isnan(r)[:, :, None], np.nan, interval).reshape(len(pos), -1)

  both = np.concatenate([single, interval], axis=1)
  kept = ~np.isnan(both)
  return np.where(kept.any(axis=1), np.max(np.where(kept, both, -np.inf), axis=1), 0.0)


def example_epsilons(unlearned: np.ndarray, retrained: np.ndarray, *, delta: float = DELTA,
                     chunk: int = 8) -> dict[str, np.ndarray]:
  """ε_j per forget example (docs/math.md §7.2 steps 1–5), vectorised over examples and thresholds.

  Per example: positive = the population with the larger median (retrained on a strict ">");
  peakiness guard: min(range_pos, range_neg) / max(range_pos, range_neg) < 0.01 ⇒ ε_j = 50;
  else ε_j = max over the thresholds of both families of ε_t, clipped to [0, 50].

  Args:
    unlearned: [M, N] confidences (φ or c) of the N forget examples under M unlearned models.
    retrained: [M, N] the same under M retrained models.
    delta: δ of the (ε, δ) bound.
    chunk: examples processed together (memory ≈ chunk · 400² · 8 bytes per array).

  Returns:
    {"epsilon": [N] float64 in [0, 50], "guard": [N] bool (the peakiness guard fired),
    "retrain_positive": [N] bool}.

  Raises:
    ValueError: shapes differ, fewer than 2 models, or a non-finite confidence.
  """
  u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
  if u.ndim != 2 or u.shape != r.shape or u.shape[0] < 2:
    raise ValueError(f"unlearned/retrained: expected two [M, N] arrays of one shape with M ≥ 2, "
                     f"got {u.shape} and {r.shape}.")
  if not (np.all(np.isfinite(u)) and np.all(np.isfinite(r))):
    raise ValueError("unlearned/retrained: confidences must be finite.")
  retrain_positive = np.median(r, axis=0) > np.median(u, axis=0)
  pos = np.where(retrain_positive[None, :], r, u).T  # [N, M]
  neg = np.where(retrain_positive[None, :], u, r).T
  pos_range, neg_range = np.ptp(pos, axis=1), np.ptp(neg, axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.minimum(pos_range, neg_range) / np.maximum(pos_range, neg_range)
  guard = ratio < PEAKINESS  # 0/0 (both constant) is NaN: not guarded, as published
  eps = np.full(len(pos), EPSILON_CAP)
  todo = np.flatnonzero(~guard)
  for start in range(0, len(todo), chunk):
    index = todo[start:start + chunk]
    eps[index] = _chunk_epsilons(pos[index], neg[index], delta)
  return {"epsilon": np.clip(eps, 0.0, EPSILON_CAP), "guard": guard,
          "retrain_positive": retrain_positive}


def bucket_points(epsilons: np.ndarray, num_models: int) -> np.ndarray:
  """points(ε) = 2^(−k) for ε in bucket k = [0.5k, 0.5k + 0.5), buckets while their end ≤
  ε_max = ceil(ln(M − 1)); 0 past the last bucket.

  Raises:
    ValueError: M < 3 (ε_max = 0 leaves no bucket).
  """
  eps_max = math.ceil(math.log(num_models - 1)) if num_models > 1 else 0
  num_buckets = int(eps_max / BUCKET)
  if num_buckets < 1:
    raise ValueError(f"num_models: {num_models} models give ε_max = {eps_max} and no bucket; "
                     "the score needs M ≥ 3.")
  k = np.floor(np.asarray(epsilons, np.float64) / BUCKET)
  return np.where(k < num_buckets, 2.0 ** -np.minimum(k, num_buckets), 0.0)


def challenge_score(unlearned: np.ndarray, retrained: np.ndarray, *,
                    retain_accuracy: tuple[np.ndarray, np.ndarray],
                    test_accuracy: tuple[np.ndarray, np.ndarray],
                    delta: float = DELTA) -> dict:
  """F = (1/N) Σ_j points(ε_j), final score F · (RA_u / RA_r) · (TA_u / TA_r) (docs/math.md §7.2).

  Args:
    unlearned, retrained: [M, N] forget-set confidences of the two populations.
    retain_accuracy: (unlearned [M], retrained [M]) accuracies on D_r; their means enter.
    test_accuracy: (unlearned [M], retrained [M]) accuracies on the test set.
    delta: δ of the (ε, δ) bound.

  Returns:
    {"F", "final", "ra_ratio", "ta_ratio", "mean_epsilon", "guard_fraction"} floats and
    "epsilon" [N] (per example).

  Raises:
    ValueError: bad shapes (see :func:`example_epsilons`), M < 3, or a retrained mean accuracy
      of 0.

  >>> rng = np.random.default_rng(0)
  >>> same = rng.normal(size=(64, 3))
  >>> ones = (np.ones(64), np.ones(64))
  >>> challenge_score(same, same, retain_accuracy=ones, test_accuracy=ones)["F"]
  1.0
  """
  eps = example_epsilons(unlearned, retrained, delta=delta)
  f = float(np.mean(bucket_points(eps["epsilon"], np.shape(unlearned)[0])))
  ratios = {}
  for name, (u, r) in (("ra_ratio", retain_accuracy), ("ta_ratio", test_accuracy)):
    if float(np.mean(r)) == 0.0:
      raise ValueError(f"{name[:2]}: the retrained models' mean accuracy is 0; no ratio.")
    ratios[name] = float(np.mean(u) / np.mean(r))
  return {"F": f, "final": f * ratios["ra_ratio"] * ratios["ta_ratio"], **ratios,
          "mean_epsilon": float(np.mean(eps["epsilon"])),
          "guard_fraction": float(np.mean(eps["guard"])), "epsilon": eps["epsilon"]}


__all__ = ["bucket_points", "challenge_score", "example_epsilons", "logit_confidence",
           "scorer_confidence"]
