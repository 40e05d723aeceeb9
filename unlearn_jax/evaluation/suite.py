"""Every metric and attack on one model, as the experiments' tables report them.

:func:`prepare_context` computes once what all models share (OU@ε perturbed sets from θ_o,
original and Retrain features, Retrain's output metrics); :func:`evaluate_model` then returns a
flat dict of table metrics plus ``details`` for plots and the JSON. Class-only metrics (OU@ε, PRA,
FM/HR, D_t^f) are ``None`` when the forget set is not whole classes.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import mia, over_unlearning, prototypes, recovery, relearning
from unlearn_jax.evaluation import representation as rep
from unlearn_jax.evaluation.inversion import InversionConfig, gradient_inversion
from unlearn_jax.evaluation.outputs import accuracy_from_logits, model_outputs
from unlearn_jax.models import Model

SETS = ("forget", "retain", "test_forget", "test_retain")


@dataclasses.dataclass(frozen=True)
class Context:
  """What every model's evaluation shares."""

  splits: Splits
  original: tuple
  ou_sets: dict[str, ArrayDataset] | None
  original_features: dict[str, np.ndarray]
  labels: dict[str, np.ndarray]
  retrain_features: list[dict[str, np.ndarray]]
  retrain_metrics: dict[str, float] | None = None


def prepare_context(model: Model, original: tuple, splits: Splits, retrains: Sequence[tuple], *,
                    config, seed: int) -> Context:
  """Perturbed sets (from ``seed``) and the features of θ_o and every Retrain seed."""
  ou_sets = None
  if config.ou.enabled and splits.forget_classes:
    ou_sets = over_unlearning.ou_sets(model, *original, splits.forget,
                                      seeding.device_key(seed, "ou_sets"),
                                      reference_compat=config.ou.reference_compat)
  original_features, labels = rep.feature_sets(model, *original, splits)
  retrain_features = [rep.feature_sets(model, *r, splits)[0] for r in retrains]
  return Context(splits, original, ou_sets, original_features, labels, retrain_features)


def output_metrics(model: Model, params, model_state, splits: Splits, *, seed: int) -> dict:
  """Accuracies on D_f, D_r, D_t^f, D_t^r (%), UA = 100 − Acc(D_f), RA, TA, and MIA."""
  acc = {s: accuracy_from_logits(model_outputs(model, params, model_state,
                                               getattr(splits, s))[1],
                                 getattr(splits, s).labels) for s in SETS}
  out = {f"acc/{s}": v for s, v in acc.items()}
  out.update(UA=100.0 - acc["forget"], RA=acc["retain"], TA=acc["test_retain"])
  return out | mia.mia_metrics(model, params, model_state, splits, seed=seed)


def _pra_curve(settings: list[dict], shots: int) -> dict[str, list[float]]:
  """Mean D_f accuracy of the PRA edit vs α, per rule, at ``shots`` shots from D_f."""
  curve: dict[str, list] = {}
  for s in settings:
    if s["source"] == "forget" and s["shots"] == shots:
      curve.setdefault(s["mode"], []).append((s["alpha"], s["forget"]))
  return {mode: [list(p) for p in sorted(points)] for mode, points in curve.items()}


def evaluate_model(model: Model, params, model_state, context: Context, *, config, seed: int,
                   invert: bool = False) -> dict[str, Any]:
  """The table's metrics for one model (floats or None) and ``details`` for plots."""
  splits = context.splits
  metrics = output_metrics(model, params, model_state, splits, seed=seed)
  details: dict[str, Any] = {}
  classes = bool(splits.forget_classes)
  if not classes:
    metrics["acc/test_forget"] = None
  if context.retrain_metrics is not None:
    metrics["gap"] = mia.gap_to_retrain(metrics, context.retrain_metrics)
  if context.ou_sets is not None:
    metrics |= over_unlearning.ou_metrics(model, context.original, (params, model_state),
                                          context.ou_sets, splits.forget_classes)
  if config.pra.enabled and classes:
    pra = prototypes.prototypical_relearning(model, params, model_state, splits, seed=seed,
                                             shots=tuple(config.pra.shots),
                                             num_draws=config.pra.num_draws)
    strongest = pra["strongest"]
    metrics["PRA/forget"] = strongest["forget"] if strongest else None
    details["pra"] = {"strongest": strongest, "base": pra["base"],
                      "curve": _pra_curve(pra["settings"], config.pra.curve_shots)}
  if config.recovery.enabled and classes:
    rec = recovery.recovery_attack(model, params, model_state, splits, original=context.original)
    metrics |= {"FM/forget": rec["fm"]["forget"], "HR/forget": rec["hr"]["forget"],
                "HeadSwap/forget": rec["head_swap"]["forget"]}
    details["recovery"] = rec
  features, _ = rep.feature_sets(model, params, model_state, splits)
  metrics["norm/forget"] = float(np.linalg.norm(features["forget"], axis=1).mean())
  metrics["CKA/original/forget"] = float(rep.linear_cka(features["forget"],
                                                        context.original_features["forget"]))
  if context.retrain_features:
    consistency = rep.retrain_consistency(features, context.retrain_features[0],
                                          labels=context.labels)
    metrics |= {"CKA/retrain/forget": consistency["forget/cka"],
                "CKA/retrain/retain": consistency["retain/cka"],
                "RC/forget": consistency["forget/rc/procrustes"],
                "RC/retain": consistency["retain/rc/procrustes"],
                "asymmetry": consistency.get("asym/rc/procrustes")}
    details["representation"] = consistency
  if config.relearn.enabled and classes:
    rel = relearning.relearn_time(model, params, model_state, splits, seed=seed,
                                  shots=config.relearn.shots, threshold=config.relearn.threshold,
                                  max_steps=config.relearn.max_steps)
    metrics["relearn/steps"] = float(rel["steps"])
  if invert:
    targets = splits.forget.subset(np.arange(min(config.inversion.num_images, len(splits.forget))))
    inv = gradient_inversion(model, params, model_state, targets, seed=seed,
                             config=InversionConfig(
                                 iterations=config.inversion.iterations,
                                 restarts=config.inversion.restarts,
                                 learning_rate=config.inversion.learning_rate))
    metrics["inversion/psnr"] = float(inv["psnr_mean"])
    details["inversion"] = {"reconstructions": np.asarray(inv["reconstructions"]).tolist(),
                            "truth": targets.images.tolist(), "psnr": float(inv["psnr_mean"]),
                            "ssim": float(inv["ssim_mean"])}
  details["projection"] = projection(features, context.labels, seed=seed)
  return {"metrics": metrics, "details": details}


def projection(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, seed: int,
               per_set: int = 150) -> dict[str, list]:
  """2-D PCA of up to ``per_set`` forget and kept test features (for the feature plots)."""
  rng = seeding.host_rng(seed, "projection")
  picked = {}
  for name in ("forget", "test_retain"):
    f, y = features[name], labels[name]
    index = rng.permutation(len(f))[:per_set]
    picked[name] = (f[index], y[index])
  stacked = np.concatenate([picked[n][0] for n in picked])
  centred = stacked - stacked.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  coords = centred @ vt[:2].T
  out, start = {}, 0
  for name, (f, y) in picked.items():
    out[name] = {"xy": coords[start:start + len(f)].round(4).tolist(), "label": y.tolist()}
    start += len(f)
  return out


def noise_floor(context: Context) -> dict[str, float] | None:
  """Retrain-vs-Retrain spread of the representation metrics (≥ 2 Retrain seeds)."""
  if len(context.retrain_features) < 2:
    return None
  return rep.noise_floor(context.retrain_features, labels=context.labels)


__all__ = ["Context", "evaluate_model", "noise_floor", "output_metrics", "prepare_context",
           "projection"]
