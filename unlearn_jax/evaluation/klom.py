"""KLOM, the KL divergence of margins (Georgiev, Rinberg, Park, Garg, Ilyas, Madry, Neel,
"Attribute-to-Delete", arXiv 2410.23232, App. E.1; the benchmark RoyRin/data-unlearning-bench,
``eval.py``; docs/math.md §7.7): how far the distribution, over the randomness of training and
unlearning, of an unlearned model's margin on an example is from a retrained model's.

Margin of a model on (x, y): m = z_y − logsumexp_{k≠y} z_k, the φ of
:func:`unlearn_jax.evaluation.challenge.logit_confidence`. Per example, with u_1..u_N the margins
of N unlearned models and r_1..r_N those of N retrained ones:

1. clip every value to [−100, 100];
2. 20 equal-width bins over [lo, hi] = [min, max] of the 2N clipped values ([lo, lo + 1] when
   they are all equal);
3. p_b, q_b = share of the u (of the r) in bin b;
4. q̃_b = max(q_b, 1e−5) where p_b > 0, else q_b, renormalised to sum 1 (the published code
   passes q̃ to ``scipy.stats.entropy``, which normalises it; the EasyDUB re-implementation,
   easydub/EasyDUB-code, skips that, a difference below 1e−4 nats);
5. KLOM = KL(p ‖ q̃) = Σ_{b: p_b > 0} p_b log(p_b / q̃_b), in nats.

0 means the two histograms match; with every u in a bin no r reaches, KLOM ≈ log(1e5) ≈ 11.5, its
largest value. The benchmark reports, per split (forget, retain, validation points), the 95th
percentile over the split's examples ("P95"); :func:`summarize` adds the mean.

Finite populations give KLOM > 0 even between two samples of one distribution (bins that one
sample fills and the other misses), falling about as 1/N: its noise floor, measured as KLOM
between two disjoint halves of the Retrain population (:func:`retrain_reference`), each method
then compared with the same half at the same N (:func:`versus`).

Direction: KL(unlearned ‖ retrained), as the published ``kl_from_margins`` names its arguments
and EasyDUB's ``klom_from_margins`` calls it (the benchmark's ``run.py`` passes the oracle's
margins first, i.e. the reverse direction).

One departure from the published code: it bins with ``np.digitize``, which puts a value equal to
the top edge hi (the largest of the 2N values) past the last bin and drops it. Here the last bin
is closed, as in ``np.histogram``, so every model counts; otherwise the arithmetic is the same.
Under the published rule a population lying entirely above the other (a collapsed unlearned
population, say) loses all its values and scores 0.
"""

import numpy as np

BINS = 20
CLIP = 100.0
EPS = 1e-5
PERCENTILE = 95.0
_BLOCK = 2048  # examples binned at once (bounds the [models, examples, edges] comparison)


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """[K, n] values, [n, B + 1] edges → [n, B] share of the K values in each bin (last closed)."""
  bins = edges.shape[1] - 1
  index = np.sum(values[:, :, None] >= edges[None, :, :], axis=-1) - 1  # np.digitize − 1
  index = np.minimum(index, bins - 1)
  counts = np.zeros((values.shape[1], bins))
  np.add.at(counts, (np.broadcast_to(np.arange(values.shape[1]), index.shape), index), 1.0)
  return counts / values.shape[0]


def klom(unlearned: np.ndarray, retrained: np.ndarray, *, bins: int = BINS, clip: float = CLIP,
         eps: float = EPS) -> np.ndarray:
  """KLOM per example (this module's steps 1–5), in nats.

  Args:
    unlearned: [N, n] margins of N unlearned models on n examples.
    retrained: [N, n] margins of N retrained models on the same examples.
    bins, clip, eps: the histogram's bins, the clipping bound and q's floor.

  Returns:
    [n] float64.

  Raises:
    ValueError: not two [N, n] arrays of one shape (populations of different sizes, or other
      examples), fewer than one model, or bins < 1.
  """
  u = np.clip(np.asarray(unlearned, np.float64), -clip, clip)
  r = np.clip(np.asarray(retrained, np.float64), -clip, clip)
  if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
    raise ValueError(f"unlearned/retrained: expected [models, examples] arrays over the same "
                     f"examples, got shapes {u.shape} and {r.shape}.")
  if u.shape[0] != r.shape[0]:
    raise ValueError(f"unlearned/retrained: populations of different sizes ({u.shape[0]} "
                     f"unlearned, {r.shape[0]} retrained models); KLOM compares N unlearned "
                     "with N retrained models.")
  if u.shape[0] < 1 or bins < 1:
    raise ValueError(f"klom: {u.shape[0]} models, {bins} bins; need at least one of each.")
  out = []
  for start in range(0, u.shape[1], _BLOCK):
    a, b = u[:, start:start + _BLOCK], r[:, start:start + _BLOCK]
    lo = np.minimum(a.min(axis=0), b.min(axis=0))
    hi = np.maximum(a.max(axis=0), b.max(axis=0))
    hi = np.where(hi > lo, hi, lo + 1.0)
    edges = np.linspace(lo, hi, bins + 1, axis=-1)
    p, q = _shares(a, edges), _shares(b, edges)
    q = np.where(p > 0, np.maximum(q, eps), q)
    q = q / q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
      out.append(np.sum(np.where(p > 0, p * np.log(p / q), 0.0), axis=1))
  return np.concatenate(out) if out else np.zeros(0)


def by_mask(values: np.ndarray, mask: np.ndarray, *, field: str = "mask") -> np.ndarray:
  """The values of the models that ``mask`` selects, per example: [K, n] → [k, n], every example
  needing the same count k (e.g. the k = M/2 models that forgot it, under balanced masks); the
  models keep their order.

  Raises:
    ValueError: shapes differ, or examples with different counts (naming one of each).
  """
  values, mask = np.asarray(values), np.asarray(mask, bool)
  if values.shape != mask.shape or values.ndim != 2:
    raise ValueError(f"{field}: shape {mask.shape}, expected the values' [models, examples] "
                     f"shape {values.shape}.")
  counts = mask.sum(axis=0)
  if len(counts) and (counts != counts[0]).any():
    other = int(np.flatnonzero(counts != counts[0])[0])
    raise ValueError(f"{field}: example 0 has {counts[0]} selected models and example {other} "
                     f"{counts[other]}; KLOM needs populations of one size per example.")
  rows = np.argsort(~mask, axis=0, kind="stable")[:counts[0] if len(counts) else 0]
  return np.take_along_axis(values, rows, axis=0)


def halves(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The first and second half of the models ([K, n] → two [K/2, n]), disjoint.

  Raises:
    ValueError: K odd or < 2 (the halves would differ in size).
  """
  k = len(values)
  if k < 2 or k % 2:
    raise ValueError(f"halves: {k} models; two disjoint halves of one size need an even count "
                     "≥ 2.")
  return values[:k // 2], values[k // 2:]


def summarize(values: np.ndarray) -> dict:
  """{"p95": the 95th percentile (the benchmark's figure), "mean", "examples"} of per-example
  KLOM values; None for an empty split."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return {"p95": None, "mean": None, "examples": 0}
  return {"p95": float(np.percentile(values, PERCENTILE)), "mean": float(np.mean(values)),
          "examples": int(values.size)}


def retrain_reference(retrained: np.ndarray, mask: np.ndarray | None = None, *,
                      field: str = "mask") -> tuple[np.ndarray, np.ndarray]:
  """Retrain's margins split for KLOM: (reference A, floor sample B), the first and second half
  of the models ``mask`` selects per example (all if None), disjoint and of one size. Methods are
  compared with A (:func:`versus`) and so is B: KLOM(B, A) is the noise floor at the same
  population size, what a method indistinguishable from Retrain scores."""
  if mask is not None:
    retrained = by_mask(retrained, mask, field=field)
  return halves(retrained)


def versus(unlearned: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None, *,
           field: str = "mask") -> dict:
  """:func:`summarize` of KLOM between the first len(``reference``) models ``mask`` selects per
  example (all if None) and the reference (Retrain's half A); model k of both used the same
  data where the populations are indexed alike.

  Raises:
    ValueError: fewer unlearned models than reference models.
  """
  if mask is not None:
    unlearned = by_mask(unlearned, mask, field=field)
  if len(unlearned) < len(reference):
    raise ValueError(f"unlearned: {len(unlearned)} models against {len(reference)} Retrain "
                     "models: populations of different sizes.")
  return summarize(klom(unlearned[:len(reference)], reference))


__all__ = ["BINS", "CLIP", "EPS", "PERCENTILE", "by_mask", "halves", "klom", "retrain_reference",
           "summarize", "versus"]
