"""The challenge forgetting score (docs/math.md §7.2): the vectorised ε equals a direct
per-example, per-threshold loop, and the score's properties (argument order, far populations,
peakiness guard, matching populations, buckets, the final score) and bad inputs."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.evaluation import challenge

ONES = (np.ones(4), np.ones(4))


def _direct_epsilons(unlearned, retrained, delta=1e-5):
  """docs/math.md §7.2 as loops: one example, one threshold at a time, plain Python counts."""
  out = []
  for j in range(unlearned.shape[1]):
    u, r = list(unlearned[:, j]), list(retrained[:, j])
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    range_pos, range_neg = max(pos) - min(pos), max(neg) - min(neg)
    if max(range_pos, range_neg) > 0 and min(range_pos, range_neg) / max(range_pos,
                                                                           range_neg) < 0.01:
      out.append(50.0)
      continue
    m = len(pos)
    rates = []  # (FNR, FPR) of every threshold of both families
    lo, hi = min(pos + neg), max(pos + neg)
    for t in np.linspace(lo, hi, int(np.ceil((hi - lo) * 100))):
      rates.append((sum(c < t for c in pos) / m, sum(c >= t for c in neg) / m))
    peaky, other = (neg, pos) if range_pos >= range_neg else (pos, neg)
    w = min(range_pos, range_neg)
    r_lo, r_hi = min(peaky) + w - 2.0, max(peaky) + 2.0
    for right in np.linspace(r_lo, r_hi, int(np.ceil((r_hi - r_lo) * 100))):
      for left in np.linspace(right - w - 2.0, right - w + 2.0, 400):
        rates.append((sum(not left <= c <= right for c in peaky) / m,
                      sum(left <= c <= right for c in other) / m))
    best = None
    for fnr, fpr in rates:
      if fnr == 0 and fpr == 0:
        eps = math.inf
      elif fnr == 0 or fpr == 0:
        continue
      else:
        terms = [math.log(1 - delta - a) - math.log(b) for a, b in ((fpr, fnr), (fnr, fpr))
                 if 1 - delta - a > 0]
        if not terms:
          continue
        eps = max(0.0, *terms)
      best = eps if best is None else max(best, eps)
    out.append(min(50.0, best if best is not None else 0.0))
  return np.asarray(out)


def test_vectorised_epsilons_equal_a_direct_loop():
  rng = np.random.default_rng(0)
  m = 6
  unlearned = np.stack([rng.normal(0, 1, m), rng.normal(0, 0.3, m), rng.normal(5, 1, m),
                        rng.normal(1, 2, m)], axis=1)
  retrained = np.stack([rng.normal(0.5, 1, m), rng.normal(0, 2, m), rng.normal(0, 1, m),
                        rng.normal(1, 0.5, m)], axis=1)
  fast = challenge.example_epsilons(unlearned, retrained)["epsilon"]
  np.testing.assert_allclose(fast, _direct_epsilons(unlearned, retrained), rtol=1e-12, atol=0)
  assert len(set(np.round(fast, 6))) >= 3 and fast.max() == 50.0  # a real comparison


def test_logit_confidence_equals_the_published_confidence_and_is_jit_able():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 4, (50, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 50)
  phi = np.asarray(challenge.logit_confidence(jnp.asarray(logits), jnp.asarray(labels)))
  np.testing.assert_allclose(phi, challenge.scorer_confidence(logits, labels), atol=1e-4)
  # φ stays exact where the published c saturates at log(1e-45) (p_y underflows in float64).
  far = np.array([[0.0, 2000.0]], np.float32)
  assert float(challenge.logit_confidence(jnp.asarray(far), jnp.array([0]))[0]) == -2000.0
  assert challenge.scorer_confidence(far, np.array([0]))[0] == pytest.approx(np.log(1e-45))
  with pytest.raises(ValueError, match="labels"):
    challenge.logit_confidence(jnp.zeros((3, 10)), jnp.zeros((4,), jnp.int32))


def _score(u, r):
  return challenge.challenge_score(u, r, retain_accuracy=ONES, test_accuracy=ONES)


def test_argument_order_far_populations_and_peakiness_guard():
  rng = np.random.default_rng(2)
  a, b = rng.normal(0, 1, (64, 12)), rng.normal(0.7, 1.5, (64, 12))
  assert _score(a, b)["F"] == _score(b, a)["F"]
  np.testing.assert_array_equal(challenge.example_epsilons(a, b)["epsilon"],
                                challenge.example_epsilons(b, a)["epsilon"])
  assert _score(a, a.copy())["F"] == 1.0  # identical populations: no rule separates them
  far = _score(a + 100.0, b)
  assert far["F"] == 0.0 and far["mean_epsilon"] == 50.0 and far["guard_fraction"] == 0.0
  peaky = challenge.example_epsilons(3.0 + 1e-4 * rng.normal(size=(64, 12)), b)
  assert peaky["guard"].all() and (peaky["epsilon"] == 50.0).all()


def test_matching_populations_score_higher():
  rng = np.random.default_rng(3)
  m, n = 256, 16
  base = rng.normal(size=(m, n))
  scores = [_score(base, rng.normal(shift, 1, (m, n)))["F"] for shift in (0.0, 1.0, 3.0)]
  # Matched independent populations score ≈ 0.15-0.2 at any M (the interval family's best of
  # 160,000 thresholds finds counting noise); a shift lowers F, a large one to about 0.
  assert scores[0] > scores[1] > scores[2] and scores[2] < 0.02 and scores[0] > 0.08


def test_bucket_points_and_final_score():
  # M = 512: ε_max = ceil(ln 511) = 7, buckets [0, 0.5), …, [6.5, 7): 2^0 … 2^-13, then 0.
  points = challenge.bucket_points(np.array([0.0, 0.49, 0.5, 6.99, 7.0, 50.0]), 512)
  np.testing.assert_array_equal(points, [1.0, 1.0, 0.5, 2.0**-13, 0.0, 0.0])
  rng = np.random.default_rng(4)
  u, r = rng.normal(size=(16, 5)), rng.normal(size=(16, 5))
  result = challenge.challenge_score(u, r, retain_accuracy=(np.full(16, 90.0), np.full(16, 100.0)),
                                     test_accuracy=(np.full(16, 80.0), np.full(16, 100.0)))
  assert result["final"] == pytest.approx(result["F"] * 0.9 * 0.8)
  assert result["epsilon"].shape == (5,)


def test_bad_inputs():
  with pytest.raises(ValueError, match="M ≥ 3"):
    challenge.bucket_points(np.zeros(3), 2)
  with pytest.raises(ValueError, match="one shape"):
    challenge.example_epsilons(np.zeros((8, 3)), np.zeros((8, 4)))
  with pytest.raises(ValueError, match="finite"):
    challenge.example_epsilons(np.full((8, 3), np.nan), np.zeros((8, 3)))
  with pytest.raises(ValueError, match="accuracy is 0"):
    challenge.challenge_score(np.zeros((8, 3)), np.ones((8, 3)),
                              retain_accuracy=(np.ones(8), np.zeros(8)), test_accuracy=ONES)
