"""Membership inference: SalUn's MIA-efficacy, a loss attack, and the gap to Retrain.

MIA-efficacy follows SalUn / Unlearn-Sparse (docs/math.md §6.2): the attacked model itself labels
its shadow sets, members = the first n retain examples and non-members = the first n test examples,
n = min(|D_r|, |D_t|) (balanced, truncated as SalUn does with n = |D_t|); one scalar feature per
example; an RBF SVC (C = 3, gamma = "auto") fitted on the shadow sets; efficacy = % of D_f predicted
non-member (higher = more forgotten; Retrain ≈ 100 in class unlearning). Per-example features are
computed on the device (:func:`mia_features`); the SVC, the logistic regression and the ROC run on
the host with scikit-learn.

The modified entropy is Song & Mittal's, computed correctly (SalUn's code reuses log p where
log(1 − p) belongs), with log(1 − p_k) taken exactly in log space also for p_k → 1.
"""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.svm import SVC

from unlearn_jax import seeding
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.models import Model

SVC_FEATURES = ("confidence", "entropy", "m_entropy")
GAP_KEYS = ("UA", "RA", "TA", "MIA")


def mia_features(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """Per-example attack features of p = softmax(s): p_y, H(p), Mentr(p, y) and CE loss.

  H(p) = −Σ_k p_k log p_k;  Mentr(p, y) = −(1 − p_y) log p_y − Σ_{k≠y} p_k log(1 − p_k)
  (Song & Mittal, 2021);  loss = −log p_y.

  Args:
    logits: [N, C] float.
    labels: [N] int, the true labels y.

  Returns:
    {"confidence", "entropy", "m_entropy", "loss"}, each [N].

  Raises:
    ValueError: ``logits`` not [N, C] with C ≥ 2, or ``labels`` not [N].
  """
  if logits.ndim != 2 or logits.shape[1] < 2:
    raise ValueError(f"logits: expected shape [N, C] with C ≥ 2, got {logits.shape}.")
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"labels: expected shape {logits.shape[:1]}, got {labels.shape}.")
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  is_y = jax.nn.one_hot(labels, logits.shape[1], dtype=bool)
  # log(1 − p_k): log1p(−p_k) is exact for p_k ≤ ½, i.e. every class but the top one; for the top
  # class 1 − p_k = Σ_{j≠k} p_j, a log-sum-exp over the other logits.
  is_top = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[1], dtype=bool)
  log_rest = (jax.nn.logsumexp(jnp.where(is_top, -jnp.inf, logits), axis=-1)
              - jax.nn.logsumexp(logits, axis=-1))
  log1m_p = jnp.where(is_top, log_rest[:, None], jnp.log1p(-jnp.where(is_top, 0.0, p)))
  log_p_y = jnp.sum(jnp.where(is_y, log_p, 0.0), axis=-1)
  log1m_p_y = jnp.sum(jnp.where(is_y, log1m_p, 0.0), axis=-1)
  m_entropy = (-jnp.exp(log1m_p_y) * log_p_y
               - jnp.sum(jnp.where(is_y, 0.0, p * log1m_p), axis=-1))
  return {"confidence": jnp.exp(log_p_y), "entropy": -jnp.sum(p * log_p, axis=-1),
          "m_entropy": m_entropy, "loss": -log_p_y}


_features = jax.jit(mia_features)


def _column(values, field: str) -> np.ndarray:
  values = np.asarray(values, np.float64)
  if values.ndim != 1 or len(values) == 0:
    raise ValueError(f"{field}: expected a non-empty 1-D array of per-example features, "
                     f"got shape {values.shape}.")
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{field}: features must be finite.")
  return values[:, None]


def svc_efficacy(member: np.ndarray, nonmember: np.ndarray, target: np.ndarray) -> float:
  """MIA-efficacy = 100 · |{x ∈ target : SVC(x) = non-member}| / |target| (SalUn).

  The RBF SVC (C = 3, gamma = "auto") is fitted on the shadow sets: ``member`` labelled 1,
  ``nonmember`` labelled 0. Deterministic (no randomness in the fit).

  Args:
    member: [n_m] per-example feature of the shadow members.
    nonmember: [n_n] the same feature of the shadow non-members.
    target: [n_t] the same feature of the attacked set (D_f).

  Returns:
    Efficacy in % (a float).

  Raises:
    ValueError: an empty, non-1-D or non-finite input.
  """
  x_member = _column(member, "member")
  x_nonmember = _column(nonmember, "nonmember")
  x_target = _column(target, "target")
  clf = SVC(C=3.0, gamma="auto", kernel="rbf")
  clf.fit(np.concatenate([x_member, x_nonmember]),
          np.concatenate([np.ones(len(x_member)), np.zeros(len(x_nonmember))]))
  return float(100.0 * np.mean(clf.predict(x_target) == 0))


def mia_efficacy(member_logits, member_labels, nonmember_logits, nonmember_labels,
                 target_logits, target_labels) -> dict[str, float]:
  """SalUn's MIA-efficacy of one attacked set for each feature in :data:`SVC_FEATURES`.

  Args:
    member_logits, member_labels: [n_m, C], [n_m]: the shadow members (retain examples).
    nonmember_logits, nonmember_labels: [n_n, C], [n_n]: the shadow non-members (test examples).
    target_logits, target_labels: [n_t, C], [n_t]: the attacked set (D_f).

  Returns:
    {"confidence", "entropy", "m_entropy"}: efficacy in %.

  Raises:
    ValueError: mismatched shapes or an empty set.
  """
  sets = {"member": (member_logits, member_labels),
          "nonmember": (nonmember_logits, nonmember_labels),
          "target": (target_logits, target_labels)}
  features = {}
  for name, (logits, labels) in sets.items():
    if len(labels) == 0:
      raise ValueError(f"{name}_labels: the {name} set is empty.")
    try:
      features[name] = jax.device_get(_features(jnp.asarray(logits), jnp.asarray(labels)))
    except ValueError as e:
      raise ValueError(f"{name}_{e}") from e
  return {f: svc_efficacy(features["member"][f], features["nonmember"][f], features["target"][f])
          for f in SVC_FEATURES}


def loss_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray, *, seed: int,
                repeats: int = 10) -> dict[str, float]:
  """Loss attack: logistic regression on log ℓ(x) separating members from held-out examples.

  The larger set is subsampled (seeded) to the size of the smaller one, so chance is 50 %. Each
  of ``repeats`` stratified random halvings fits the regression on one half and scores the other;
  accuracy and AUROC are means over the repeats (disjoint halves keep the estimate unbiased at
  chance, unlike pooled k-fold predictions on small sets). log ℓ is a monotone map of the CE loss ℓ,
  taken so that the one-feature logistic fit is well conditioned.

  Args:
    member_losses: [n_m] CE losses of the members (D_f).
    nonmember_losses: [n_n] CE losses of held-out examples of the same classes.
    seed: the subsample and the halvings are functions of it alone.
    repeats: number of random halvings (≥ 1).

  Returns:
    {"accuracy": % correct, "auc": AUROC with members as positives (0.5 = indistinguishable)}.

  Raises:
    ValueError: ``repeats`` < 1, an empty or non-finite input, or fewer than 2 examples in the
      smaller set.
  """
  if repeats < 1:
    raise ValueError(f"repeats: {repeats} < 1.")
  members = _column(member_losses, "member_losses")[:, 0]
  nonmembers = _column(nonmember_losses, "nonmember_losses")[:, 0]
  n = min(len(members), len(nonmembers))
  if n < 2:
    raise ValueError(f"member_losses/nonmember_losses: the smaller set has {n} example(s); "
                     "need at least 2.")
  rng = seeding.host_rng(seed, "loss_attack")
  members = members[np.sort(rng.permutation(len(members))[:n])]
  nonmembers = nonmembers[np.sort(rng.permutation(len(nonmembers))[:n])]
  x = np.log(np.concatenate([members, nonmembers]) + 1e-12)[:, None]
  y = np.concatenate([np.ones(n), np.zeros(n)])
  halves = StratifiedShuffleSplit(n_splits=repeats, test_size=0.5,
                                  random_state=int(rng.integers(2**31)))
  accuracy, auc = [], []
  for fit, held in halves.split(x, y):
    clf = LogisticRegression().fit(x[fit], y[fit])
    proba = clf.predict_proba(x[held])[:, 1]
    accuracy.append(100.0 * np.mean((proba > 0.5) == y[held]))
    auc.append(roc_auc_score(y[held], proba))
  return {"accuracy": float(np.mean(accuracy)), "auc": float(np.mean(auc))}


def mia_metrics(model: Model, params, model_state, splits: Splits, *, seed: int = 0,
                batch_size: int = 512) -> dict[str, float]:
  """MIA-efficacy (SalUn) and the loss attack for one model on ``splits``.

  Shadow members: the first n examples of D_r; shadow non-members: the first n of the whole test
  set D_t (all classes, as SalUn's test loader), n = min(|D_r|, |D_t|); attacked set: D_f. The loss
  attack separates D_f from the test examples of D_f's classes (D_t^f in class unlearning); it is
  left out when fewer than 2 such test examples exist.

  Args:
    model, params, model_state: the attacked model (eval-mode batch norm).
    splits: the unlearning splits.
    seed: seeds the loss attack's subsample and folds.
    batch_size: forward-pass batch size.

  Returns:
    {"MIA": confidence efficacy %, "MIA/entropy", "MIA/m_entropy", "loss_attack/accuracy",
    "loss_attack/auc"}.
  """
  test = splits.dataset.test
  n = min(len(splits.retain), len(test))
  members = splits.retain.subset(np.arange(n))
  nonmembers = test.subset(np.arange(n))
  logits = {name: model_outputs(model, params, model_state, data, batch_size=batch_size)[1]
            for name, data in (("member", members), ("nonmember", nonmembers),
                               ("target", splits.forget))}
  efficacy = mia_efficacy(logits["member"], members.labels, logits["nonmember"],
                          nonmembers.labels, logits["target"], splits.forget.labels)
  result = {"MIA": efficacy["confidence"], "MIA/entropy": efficacy["entropy"],
            "MIA/m_entropy": efficacy["m_entropy"]}
  held_out = test.subset(np.flatnonzero(np.isin(test.labels, np.unique(splits.forget.labels))))
  if len(held_out) >= 2:
    held_logits = model_outputs(model, params, model_state, held_out, batch_size=batch_size)[1]
    attack = loss_attack(np.asarray(_features(logits["target"], splits.forget.labels)["loss"]),
                         np.asarray(_features(held_logits, held_out.labels)["loss"]), seed=seed)
    result |= {f"loss_attack/{k}": v for k, v in attack.items()}
  return result


def gap_to_retrain(metrics: dict[str, float], retrain_metrics: dict[str, float]) -> float:
  """Avg. Gap = (1/4) Σ_{m ∈ {UA, RA, TA, MIA}} |m(θ_u) − m(θ_r)| (SalUn).

  Keys, all in %: "UA" = 100 − Acc(D_f), "RA" = Acc(D_r), "TA" = Acc(D_t^r) (the test set of kept
  classes; all of D_t in random forgetting), "MIA" = MIA-efficacy (:func:`mia_metrics`).

  Args:
    metrics: the unlearned model's metrics (other keys are ignored).
    retrain_metrics: the Retrain model's metrics.

  Returns:
    The mean absolute difference in percentage points.

  Raises:
    ValueError: a key of :data:`GAP_KEYS` missing from either dict.
  """
  for name, m in (("metrics", metrics), ("retrain_metrics", retrain_metrics)):
    missing = [k for k in GAP_KEYS if k not in m]
    if missing:
      raise ValueError(f"{name}: missing key(s) {missing}; need {', '.join(GAP_KEYS)}.")
  return float(np.mean([abs(float(metrics[k]) - float(retrain_metrics[k])) for k in GAP_KEYS]))


def _evaluate(model: Model, params, model_state, context, settings: registry.Settings, *,
              seed: int) -> tuple[dict, dict]:
  """:func:`mia_metrics` on the context's splits (the suite adds the Avg. Gap from them)."""
  return mia_metrics(model, params, model_state, context.splits, seed=seed), {}


METRIC = registry.register(registry.Metric(
    "mia", _evaluate, columns=(("MIA", "MIA", ".1f"), ("Gap", "gap", ".2f")), switch=True))


__all__ = ["GAP_KEYS", "METRIC", "SVC_FEATURES", "gap_to_retrain", "loss_attack", "mia_efficacy",
           "mia_features", "mia_metrics", "svc_efficacy"]
