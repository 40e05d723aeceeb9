"""Per-example membership attacks on model populations: LiRA (Carlini et al., S&P 2022;
docs/math.md §7.3) and the unlearning MIAs P1, P2 and U-LiRA (Hayes et al., 2024; §7.4–§7.5).

Everything reads one statistic, φ = z_y − logsumexp_{k≠y} z_k per (model, example)
(:func:`unlearn_jax.evaluation.challenge.logit_confidence`, computed on the device), and boolean
membership masks [models, examples]; the fits, ROC curves and logistic regressions run on the host
with NumPy and scikit-learn. Models rotate through ``folds`` folds: each fold in turn is the target
models, the others the shadow models. Every random choice (balanced negatives, cross-validation
splits) is a function of ``seed``.
"""

import dataclasses
import warnings

import numpy as np
from scipy.special import log_ndtr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold

from unlearn_jax import seeding

MIN_PER_EXAMPLE = 32  # values on both sides for a per-example σ (U-LiRA's rule)
MIN_VALUES = 2  # fewer on either side: the example is skipped and counted
SIGMA_FLOOR = 1e-3
SIGMA_FLOOR_FRACTION = 0.05
FPR_LEVELS = (0.01, 0.001)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
VULNERABLE = 0.75  # per-example accuracy from which an example counts as vulnerable
VARIANCES = ("auto", "per_example", "fixed")


@dataclasses.dataclass(frozen=True)
class GaussianFit:
  """Per-example Gaussians of φ on the IN and OUT side; every field is [N]."""

  mu_in: np.ndarray
  sigma_in: np.ndarray
  mu_out: np.ndarray
  sigma_out: np.ndarray
  num_in: np.ndarray
  num_out: np.ndarray

  @property
  def valid(self) -> np.ndarray:
    """bool [N]: at least 2 values on both sides (else the example is skipped)."""
    return (self.num_in >= MIN_VALUES) & (self.num_out >= MIN_VALUES)


def _side(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
  """(median [N], per-example std [N], count [N], pooled σ) of the masked values of one side.

  The pooled σ = sqrt(mean of (φ − median(x))² over all the side's values of examples with ≥ 2
  of them): the spread within examples, not between them.
  """
  count = mask.sum(axis=0)
  masked = np.where(mask, values, np.nan)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: examples without values
    median = np.nanmedian(masked, axis=0)
    std = np.nanstd(masked, axis=0)
  usable = count >= MIN_VALUES
  residual = np.where(mask & usable[None, :], values - median[None, :], 0.0)
  pooled = float(np.sqrt(np.sum(residual**2) / max(int(np.sum(count[usable])), 1)))
  return median, std, count, pooled


def fit_gaussians(in_values: np.ndarray, is_in: np.ndarray, out_values: np.ndarray,
                  is_out: np.ndarray, *, variance: str = "auto",
                  min_per_example: int = MIN_PER_EXAMPLE) -> GaussianFit:
  """μ = median, σ per the rule of ``variance``, of the IN and OUT shadow values per example.

  σ rules: "auto" (U-LiRA, docs/math.md §7.5 step 6): per example when both sides have
  ≥ ``min_per_example`` values, else the side's pooled σ; "per_example" (LiRA online); "fixed"
  (one pooled σ per side, LiRA's fixed variance). Always floored: σ ≥ max(1e-3, 0.05 · pooled σ
  of the side).

  Args:
    in_values, out_values: [S, N] φ of the S shadow models on N examples (the same array, or
      the OUT side from other models, e.g. the originals).
    is_in, is_out: [S, N] bool: which values enter each side.
    variance: one of :data:`VARIANCES`.
    min_per_example: the "auto" rule's count.

  Returns:
    A :class:`GaussianFit`; examples with < 2 values on a side have NaN moments and
    ``valid`` False.

  Raises:
    ValueError: shapes differ, or an unknown ``variance``.
  """
  if variance not in VARIANCES:
    raise ValueError(f"variance: {variance!r}; allowed: {', '.join(VARIANCES)}.")
  shapes = {np.shape(a) for a in (in_values, is_in, out_values, is_out)}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"in_values/is_in/out_values/is_out: expected four [S, N] arrays of one "
                     f"shape, got {[np.shape(a) for a in (in_values, is_in, out_values, is_out)]}.")
  mu_in, std_in, n_in, pooled_in = _side(np.asarray(in_values, np.float64), np.asarray(is_in))
  mu_out, std_out, n_out, pooled_out = _side(np.asarray(out_values, np.float64),
                                             np.asarray(is_out))
  if variance == "per_example":
    own = np.ones(mu_in.shape, bool)
  elif variance == "fixed":
    own = np.zeros(mu_in.shape, bool)
  else:
    own = (n_in >= min_per_example) & (n_out >= min_per_example)
  sigma_in = np.maximum(np.where(own, std_in, pooled_in), max(SIGMA_FLOOR,
                                                                SIGMA_FLOOR_FRACTION * pooled_in))
  sigma_out = np.maximum(np.where(own, std_out, pooled_out),
                         max(SIGMA_FLOOR, SIGMA_FLOOR_FRACTION * pooled_out))
  return GaussianFit(mu_in, sigma_in, mu_out, sigma_out, n_in, n_out)


def _log_normal(x, mu, sigma):
  return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def log_likelihood_ratio(phi: np.ndarray, fit: GaussianFit) -> np.ndarray:
  """Λ = log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out) (LiRA online), [..., N] → [..., N]."""
  return _log_normal(phi, fit.mu_in, fit.sigma_in) - _log_normal(phi, fit.mu_out, fit.sigma_out)


def offline_score(phi: np.ndarray, fit: GaussianFit) -> np.ndarray:
  """LiRA offline, one-sided: log Φ((φ − μ_out) / σ_out), [..., N] → [..., N]."""
  return log_ndtr((phi - fit.mu_out) / fit.sigma_out)


def attack_metrics(scores: np.ndarray, labels: np.ndarray, *, threshold: float = 0.0
                   ) -> dict[str, float]:
  """AUC, best balanced accuracy max_t (TPR + TNR)/2, accuracy of "positive iff score >
  ``threshold``", and TPR at FPR ≤ 1% / 0.1% (the ROC's largest TPR there; keys
  ``tpr@1e-02fpr``, ``tpr@1e-03fpr``).

  Args:
    scores: [n] higher = more likely positive.
    labels: [n] bool, True = positive (member / forgotten).

  Raises:
    ValueError: a class is absent.
  """
  labels = np.asarray(labels, bool)
  if labels.all() or not labels.any():
    raise ValueError(f"labels: need positives and negatives, got {labels.sum()} of {len(labels)}.")
  fpr, tpr, _ = roc_curve(labels, scores)
  out = {"auc": float(roc_auc_score(labels, scores)),
         "best_balanced_accuracy": float(np.max((tpr + 1 - fpr) / 2)),
         "accuracy": float(np.mean((np.asarray(scores) > threshold) == labels))}
  for level in FPR_LEVELS:
    out[f"tpr@{level:.0e}fpr"] = float(np.max(tpr[fpr <= level]))
  return out


def model_folds(num_models: int, folds: int) -> np.ndarray:
  """Fold of each model, m mod ``folds`` ([M] int).

  Raises:
    ValueError: fewer than 2 folds, or fewer models than folds.
  """
  if folds < 2 or num_models < folds:
    raise ValueError(f"folds: {folds} folds for {num_models} models; need 2 ≤ folds ≤ models.")
  return np.arange(num_models) % folds


def summarize(per_target: list[dict[str, float]]) -> dict:
  """Mean and std (population) over targets of each metric; ``targets`` counts them."""
  if not per_target:
    return {"targets": 0}
  keys = per_target[0]
  return {"targets": len(per_target),
          **{k: {"mean": float(np.mean([t[k] for t in per_target])),
                 "std": float(np.std([t[k] for t in per_target]))} for k in keys}}


def lira(phi: np.ndarray, members: np.ndarray, *, folds: int = 4,
         variance: str = "per_example", offline: bool = False) -> dict:
  """LiRA (docs/math.md §7.3): fit on the shadow folds, score every example of each target.

  Online: Λ = log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out); offline (OUT models only):
  log Φ((φ − μ_out)/σ_out). Members of a target are its mask's True entries.

  Args:
    phi: [M, N] φ of M models on the N pool examples.
    members: [M, N] bool, model m trained on example n.
    folds: target/shadow rotation.
    variance: "per_example" or "fixed" (see :func:`fit_gaussians`).
    offline: use OUT models only.

  Returns:
    {"metrics": mean/std over targets of :func:`attack_metrics`, "skipped": example-fold pairs
    with < 2 shadow values on a needed side}.
  """
  phi, members = np.asarray(phi, np.float64), np.asarray(members, bool)
  fold = model_folds(len(phi), folds)
  per_target, skipped = [], 0
  for f in range(folds):
    shadow = fold != f
    fit = fit_gaussians(phi[shadow], members[shadow], phi[shadow], ~members[shadow],
                        variance=variance)
    valid = fit.num_out >= MIN_VALUES if offline else fit.valid
    skipped += int(np.sum(~valid))
    for t in np.flatnonzero(fold == f):
      score = offline_score(phi[t], fit) if offline else log_likelihood_ratio(phi[t], fit)
      labels = members[t, valid]
      if labels.any() and not labels.all():
        per_target.append(attack_metrics(score[valid], labels,
                                         threshold=np.log(0.5) if offline else 0.0))
  return {"metrics": summarize(per_target), "skipped": skipped}


def _balanced(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator) -> tuple:
  n = min(len(pos), len(neg))
  return (np.sort(rng.choice(pos, n, replace=False)), np.sort(rng.choice(neg, n, replace=False)))


def u_mia(phi: np.ndarray, forgot: np.ndarray, seen: np.ndarray, *, seed: int, folds: int = 4,
          out_phi: np.ndarray | None = None, variance: str = "auto",
          min_per_example: int = MIN_PER_EXAMPLE) -> dict:
  """U-LiRA and P2 (docs/math.md §7.4–§7.5) on unlearned models, from the same balanced samples.

  For target-set example x and shadow models S: IN = φ of shadows that forgot x, OUT = φ of
  shadows that never saw x (of ``out_phi``, e.g. the originals, if given). U-LiRA scores
  Λ = log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out) and predicts "forgotten" iff Λ > 0; P2 fits
  one logistic regression on φ pooled over the shadows (forgotten vs never seen). Each target
  is attacked on its forgotten examples against as many never-seen ones, both subsampled to
  equal size with ``host_rng(seed, "u_mia", target)``. Examples with < 2 shadow values on a side
  are skipped (in that fold) and counted.

  Args:
    phi: [M, N] φ of the M unlearned models on the N target-set examples.
    forgot: [M, N] bool, model m trained on x and then unlearned it.
    seen: [M, N] bool, model m's training half held x (forgot ⊆ seen).
    seed: the subsampling's seed.
    folds: target/shadow rotation.
    out_phi: optional [M, N] φ for the OUT side (default ``phi``).
    variance, min_per_example: σ rule (:func:`fit_gaussians`).

  Returns:
    {"u_lira", "p2": mean/std over targets of :func:`attack_metrics`; "skipped": example-fold
    pairs skipped; "skipped_examples": examples skipped in some fold; "vulnerability":
    quantiles, mean and share ≥ 0.75 of the per-example U-LiRA accuracy over the targets that
    attacked it; "per_example_accuracy": [N] (NaN where never attacked)}.

  Raises:
    ValueError: mismatched shapes, or a forgotten example outside its model's half.
  """
  phi, forgot, seen = np.asarray(phi, np.float64), np.asarray(forgot, bool), np.asarray(seen, bool)
  out_phi = phi if out_phi is None else np.asarray(out_phi, np.float64)
  if not phi.shape == forgot.shape == seen.shape == out_phi.shape or phi.ndim != 2:
    raise ValueError(f"phi/forgot/seen/out_phi: expected [M, N] arrays of one shape, got "
                     f"{phi.shape}, {forgot.shape}, {seen.shape}, {out_phi.shape}.")
  outside = forgot & ~seen
  if outside.any():
    m, n = np.argwhere(outside)[0]
    raise ValueError(f"forgot: model {m} forgets example {n}, which is not in its training half "
                     f"({int(outside.sum())} such entries); forget sets must lie in the halves.")
  fold = model_folds(len(phi), folds)
  lira_t, p2_t, skipped, skipped_any = [], [], 0, np.zeros(phi.shape[1], bool)
  correct, attacked = np.zeros(phi.shape[1]), np.zeros(phi.shape[1])
  for f in range(folds):
    s = fold != f
    fit = fit_gaussians(phi[s], forgot[s], out_phi[s], ~seen[s], variance=variance,
                        min_per_example=min_per_example)
    valid = fit.valid
    skipped += int(np.sum(~valid))
    skipped_any |= ~valid
    x = np.concatenate([phi[s][forgot[s] & valid[None, :]],
                        out_phi[s][~seen[s] & valid[None, :]]])[:, None]
    y = np.concatenate([np.ones(int(np.sum(forgot[s] & valid[None, :]))),
                        np.zeros(int(np.sum(~seen[s] & valid[None, :])))])
    p2 = LogisticRegression(class_weight="balanced").fit(x, y) if 0 < y.sum() < len(y) else None
    for t in np.flatnonzero(fold == f):
      rng = seeding.host_rng(seed, "u_mia", int(t))
      pos, neg = _balanced(np.flatnonzero(forgot[t] & valid), np.flatnonzero(~seen[t] & valid),
                           rng)
      if len(pos) == 0:
        continue
      index, labels = np.concatenate([pos, neg]), np.repeat([True, False], len(pos))
      score = log_likelihood_ratio(phi[t], fit)[index]
      lira_t.append(attack_metrics(score, labels))
      if p2 is not None:
        p2_t.append(attack_metrics(p2.decision_function(phi[t, index][:, None]), labels))
      correct[index] += (score > 0) == labels
      attacked[index] += 1
  with np.errstate(invalid="ignore", divide="ignore"):
    per_example = correct / attacked
  return {"u_lira": summarize(lira_t), "p2": summarize(p2_t), "skipped": skipped,
          "skipped_examples": int(skipped_any.sum()),
          "vulnerability": vulnerability(per_example),
          "per_example_accuracy": per_example}


def vulnerability(per_example_accuracy: np.ndarray) -> dict:
  """Quantiles, mean and share ≥ 0.75 (``share_vulnerable``) of per-example attack accuracies
  (NaN = never attacked, left out; ``examples`` counts the rest)."""
  acc = np.asarray(per_example_accuracy, np.float64)
  acc = acc[np.isfinite(acc)]
  if len(acc) == 0:
    return {"examples": 0}
  return {"examples": len(acc), "mean": float(np.mean(acc)),
          "share_vulnerable": float(np.mean(acc >= VULNERABLE)),
          **{f"q{int(q * 100)}": float(np.quantile(acc, q)) for q in QUANTILES}}


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, *, l2: float = 1.0,
                 steps: int = 30) -> tuple[np.ndarray, np.ndarray]:
  """Many 1-D logistic regressions at once: per problem p, minimise
  ½·l2·a² + Σ_i w_i·log(1 + exp(−s_i(a·x_i + b))), s_i = 2y_i − 1 (scikit-learn's
  ``LogisticRegression`` objective with C = 1/l2), by Newton's method.

  Args:
    x, y, weight: [P, n] features, {0, 1} labels and weights (0 = padding).

  Returns:
    (a [P], b [P]): predict 1 iff a·x + b > 0.
  """
  a, b = np.zeros(len(x)), np.zeros(len(x))
  for _ in range(steps):
    p = 1.0 / (1.0 + np.exp(-(a[:, None] * x + b[:, None])))
    r, h = weight * (p - y), weight * p * (1 - p)
    g_a, g_b = np.sum(r * x, axis=1) + l2 * a, np.sum(r, axis=1)
    h_aa, h_ab, h_bb = np.sum(h * x * x, axis=1) + l2, np.sum(h * x, axis=1), np.sum(h, axis=1)
    det = h_aa * h_bb - h_ab**2 + 1e-12
    a, b = a - (h_bb * g_a - h_ab * g_b) / det, b - (h_aa * g_b - h_ab * g_a) / det
  return a, b


def _log_loss(phi) -> np.ndarray:
  """log ℓ of the CE loss ℓ = log(1 + e^(−φ)) (p_y = σ(φ)), exact for large φ (log ℓ → −φ)."""
  phi = np.asarray(phi, np.float64)
  return np.where(phi > 30.0, -phi, np.log(np.logaddexp(0.0, -np.minimum(phi, 30.0))))


def p1(forget_phi: np.ndarray, forgot: np.ndarray, heldout_phi: np.ndarray, *, seed: int,
       splits: int = 10) -> dict:
  """P1 (docs/math.md §7.4): per unlearned model, logistic regression on the CE loss
  ℓ = log(1 + e^(−φ)) separating its forgotten examples from held-out ones (balanced by
  truncation to the smaller count, in stored order), accuracy over ``splits`` stratified folds.
  The feature is log ℓ, a monotone map of ℓ that keeps the one-feature fit well conditioned (as
  :func:`unlearn_jax.evaluation.mia.loss_attack`): on ℓ itself, whose members' values are
  ~1e-4, the L2 penalty flattens the fit. The regressions of all models and folds are fitted at
  once (:func:`fit_logistic`).

  Args:
    forget_phi: [M, N] φ of each model on the target-set examples.
    forgot: [M, N] bool, which of them model m forgot.
    heldout_phi: [M, H] φ on held-out examples (test set; for class forgetting the test
      examples of the forgotten classes).
    seed: the folds' shuffling is a function of (seed, model).
    splits: cross-validation folds.

  Returns:
    {"accuracy": mean/std over models (None if none scored), "models": number scored,
    "skipped": models with fewer than ``splits`` examples per side}.
  """
  loss_f, loss_h = _log_loss(forget_phi), _log_loss(heldout_phi)
  problems, owner, skipped = [], [], 0
  for m in range(len(loss_f)):
    members = loss_f[m, np.asarray(forgot[m], bool)]
    n = min(len(members), loss_h.shape[1])
    if n < splits:
      skipped += 1
      continue
    x, y = np.concatenate([members[:n], loss_h[m, :n]]), np.repeat([1.0, 0.0], n)
    folds = StratifiedKFold(splits, shuffle=True,
                            random_state=int(seeding.host_rng(seed, "p1", m).integers(2**31)))
    for fit, held in folds.split(x[:, None], y):
      problems.append((x[fit], y[fit], x[held], y[held]))
      owner.append(m)
  if not problems:
    return {"accuracy": None, "models": 0, "skipped": skipped}

  def padded(i):
    width = max(len(p[i]) for p in problems)
    values = np.zeros((len(problems), width))
    present = np.zeros((len(problems), width))
    for row, p in enumerate(problems):
      values[row, :len(p[i])], present[row, :len(p[i])] = p[i], 1.0
    return values, present

  (x_fit, w_fit), (y_fit, _), (x_held, w_held), (y_held, _) = map(padded, range(4))
  a, b = fit_logistic(x_fit, y_fit, w_fit)
  correct = ((a[:, None] * x_held + b[:, None] > 0) == (y_held > 0.5)) * w_held
  fold_accuracy = correct.sum(axis=1) / w_held.sum(axis=1)
  owner = np.asarray(owner)
  accuracies = [float(np.mean(fold_accuracy[owner == m])) for m in np.unique(owner)]
  return {"accuracy": {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies))},
          "models": len(accuracies), "skipped": skipped}


__all__ = ["GaussianFit", "attack_metrics", "fit_gaussians", "fit_logistic", "lira",
           "log_likelihood_ratio", "model_folds", "offline_score", "p1", "summarize", "u_mia",
           "vulnerability"]
