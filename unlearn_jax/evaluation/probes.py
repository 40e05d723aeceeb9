"""What frozen features still reveal about forgotten classes, and how similar each layer stays.

Recoverability (docs/math.md §3.5): a logistic-regression probe and a k-NN classifier
(k = 20, cosine) fitted on frozen features of held-out images of *all* classes (the test set D_t)
and scored on the forget images D_f, which neither saw. Detectability: the AUROC of telling
forget-class from kept-class test images by feature norm alone, smaller norm counted as "more
forgotten" (OPC contracts forget features toward 0, which makes them detectable even when they are
unrecoverable). Per-layer similarity: linear CKA between two models at every stage
(``Model.stage_features``). Feature extraction runs on the device; the fits and the ROC on the host.
"""

import functools

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from unlearn_jax.data.batching import iterate, pad_to_multiple
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.evaluation.representation import linear_cka
from unlearn_jax.models import Model
from unlearn_jax.training import sharding


def _check_fit_eval(fit_features, fit_labels, eval_features, eval_labels) -> None:
  for field, x, y in (("fit", fit_features, fit_labels), ("eval", eval_features, eval_labels)):
    if x.ndim != 2 or len(x) == 0 or y.shape != x.shape[:1]:
      raise ValueError(f"{field}_features/{field}_labels: expected non-empty [n, d] features "
                       f"and [n] labels, got {x.shape} and {y.shape}.")
  if fit_features.shape[1] != eval_features.shape[1]:
    raise ValueError(f"eval_features: width {eval_features.shape[1]} differs from the fit "
                     f"features' {fit_features.shape[1]}.")


def linear_probe_accuracy(fit_features: np.ndarray, fit_labels: np.ndarray,
                          eval_features: np.ndarray, eval_labels: np.ndarray, *,
                          c: float = 1.0, max_iter: int = 2000) -> float:
  """Acc(probe; eval), probe = argmin_{W,b} Σ CE(W z + b, y) + ‖W‖²/(2c) on standardised z.

  Deterministic (L-BFGS). Zero-variance feature columns are left unscaled.

  Args:
    fit_features, fit_labels: [n, d] frozen features and [n] labels the probe is fitted on.
    eval_features, eval_labels: [m, d], [m]: the images it is scored on.
    c: inverse L2 strength (scikit-learn's ``C``).
    max_iter: L-BFGS iterations.

  Returns:
    Accuracy in %.

  Raises:
    ValueError: empty or mismatched arrays.
  """
  fit_features, eval_features = np.asarray(fit_features), np.asarray(eval_features)
  fit_labels, eval_labels = np.asarray(fit_labels), np.asarray(eval_labels)
  _check_fit_eval(fit_features, fit_labels, eval_features, eval_labels)
  probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
  probe.fit(fit_features, fit_labels)
  return float(100.0 * np.mean(probe.predict(eval_features) == eval_labels))


def knn_accuracy(fit_features: np.ndarray, fit_labels: np.ndarray, eval_features: np.ndarray,
                 eval_labels: np.ndarray, *, k: int = 20) -> float:
  """Acc of the majority label among the k fitted features nearest in cosine distance 1 − cos.

  A zero feature is at distance 1 from everything (ties broken by fit order).

  Args:
    fit_features, fit_labels: [n, d], [n]: the neighbours.
    eval_features, eval_labels: [m, d], [m]: the queries.
    k: neighbours per query, in 1..n.

  Returns:
    Accuracy in %.

  Raises:
    ValueError: empty or mismatched arrays, or ``k`` outside 1..n.
  """
  fit_features, eval_features = np.asarray(fit_features), np.asarray(eval_features)
  fit_labels, eval_labels = np.asarray(fit_labels), np.asarray(eval_labels)
  _check_fit_eval(fit_features, fit_labels, eval_features, eval_labels)
  if not 1 <= k <= len(fit_features):
    raise ValueError(f"k: {k}; must be in 1..{len(fit_features)} (the fitted examples).")
  knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
  knn.fit(fit_features, fit_labels)
  return float(100.0 * np.mean(knn.predict(eval_features) == eval_labels))


def norm_detectability(forget_features: np.ndarray, kept_features: np.ndarray) -> float:
  """AUROC of the score −‖f(x)‖₂ for forget-class (positive) vs kept-class (negative) images.

  1 = every forget-class image has a smaller feature norm than every kept-class image (forgetting
  is visible from the norm alone); 0.5 = the norm tells nothing; < 0.5 = forget-class norms are
  larger.

  Args:
    forget_features: [n_f, d] features of forget-class images (e.g. D_t^f).
    kept_features: [n_k, d] features of kept-class images (e.g. D_t^r).

  Returns:
    AUROC in [0, 1].

  Raises:
    ValueError: an empty set or different widths.
  """
  forget_features, kept_features = np.asarray(forget_features), np.asarray(kept_features)
  for field, x in (("forget_features", forget_features), ("kept_features", kept_features)):
    if x.ndim != 2 or len(x) == 0:
      raise ValueError(f"{field}: expected a non-empty [n, d] matrix, got {x.shape}.")
  if forget_features.shape[1] != kept_features.shape[1]:
    raise ValueError(f"kept_features: width {kept_features.shape[1]} differs from "
                     f"forget_features' {forget_features.shape[1]}.")
  norms = np.linalg.norm(np.concatenate([forget_features, kept_features]), axis=1)
  positive = np.concatenate([np.ones(len(forget_features)), np.zeros(len(kept_features))])
  return float(roc_auc_score(positive, -norms))


def recoverability(model: Model, params, model_state, splits: Splits, *, k: int = 20,
                   batch_size: int = 512) -> dict[str, float]:
  """Probe / k-NN recoverability, norm detectability and mean norms of one model on ``splits``.

  Probes are fitted on the whole test set D_t (held-out, all classes) and scored on D_f.

  Returns:
    {"probe/forget", "knn/forget": accuracy % on D_f; "norm_auroc" (needs D_t^f, so class
    unlearning only); "feature_norm/S" and "logit_norm/S": mean ‖f(x)‖₂ and ‖s(x)‖₂ on each
    non-empty S ∈ {forget, test_forget, test_retain}}.
  """
  outputs = {name: model_outputs(model, params, model_state, getattr(splits, name),
                                 batch_size=batch_size)
             for name in ("forget", "test_forget", "test_retain")}
  test = splits.dataset.test
  fit_features = model_outputs(model, params, model_state, test, batch_size=batch_size)[0]
  forget_features = outputs["forget"][0]
  out = {"probe/forget": linear_probe_accuracy(fit_features, test.labels, forget_features,
                                               splits.forget.labels),
         "knn/forget": knn_accuracy(fit_features, test.labels, forget_features,
                                    splits.forget.labels, k=k)}
  if len(splits.test_forget):
    out["norm_auroc"] = norm_detectability(outputs["test_forget"][0], outputs["test_retain"][0])
  for name, (features, logits) in outputs.items():
    if len(features):
      out[f"feature_norm/{name}"] = float(np.mean(np.linalg.norm(features, axis=1)))
      out[f"logit_norm/{name}"] = float(np.mean(np.linalg.norm(logits, axis=1)))
  return out


@functools.cache
def _stages(model: Model):
  return jax.jit(model.stage_features)


def stage_outputs(model: Model, params, model_state, data: ArrayDataset, *,
                  batch_size: int = 512, mesh=None) -> dict[str, np.ndarray]:
  """Globally pooled activations of every stage, stage name → [N, d_stage], in data order.

  Raises:
    ValueError: an empty ``data``.
  """
  if len(data) == 0:
    raise ValueError("data: no images to run.")
  mesh = mesh or sharding.make_mesh()
  batch_size = pad_to_multiple(min(batch_size, len(data)), mesh.devices.size)
  params, model_state = sharding.replicate((params, model_state), mesh)
  parts: dict[str, list[np.ndarray]] = {}
  for batch in iterate(data, batch_size):
    stages = sharding.to_host(
        _stages(model)(params, model_state, sharding.shard_leading(batch["image"], mesh)))
    keep = batch["mask"] > 0
    for name, value in stages.items():
      parts.setdefault(name, []).append(value[keep])
  return {name: np.concatenate(values) for name, values in parts.items()}


def stage_cka(model: Model, first: tuple, second: tuple, data: ArrayDataset, *,
              batch_size: int = 512) -> dict[str, float]:
  """{"cka/<stage>": CKA(f^ℓ_{θ_a}(X), f^ℓ_{θ_b}(X))} for every stage ℓ, ending "penultimate".

  Args:
    model: the architecture shared by both models.
    first, second: (params, model_state) of the two models (e.g. θ_o and θ_u, or θ_r and θ_u).
    data: the inputs X (e.g. D_f or D_r).
    batch_size: forward-pass batch size.

  Returns:
    A dict of floats in [0, 1] (0 for a collapsed stage).

  Raises:
    ValueError: an empty ``data``.
  """
  a = stage_outputs(model, *first, data, batch_size=batch_size)
  b = stage_outputs(model, *second, data, batch_size=batch_size)
  return {f"cka/{name}": float(linear_cka(a[name], b[name])) for name in a}


__all__ = ["knn_accuracy", "linear_probe_accuracy", "norm_detectability", "recoverability",
           "stage_cka", "stage_outputs"]
