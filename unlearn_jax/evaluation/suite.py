"""Every metric and attack on one model, as the experiments' tables report them.

:func:`prepare_context` computes once what all models share (original and Retrain models, the
original's features, Retrain's output metrics, and each registered metric's ``prepare``);
:func:`evaluate_model` then returns a flat dict of table metrics plus ``details`` for plots and the
JSON: the outputs (accuracies, :data:`COLUMNS`), every enabled metric of the
:mod:`~unlearn_jax.evaluation.registry` whose needs are met, the Avg. Gap and the feature summary.
Settings are plain :class:`~unlearn_jax.evaluation.registry.Settings` by metric name (missing
names take their defaults). Class-only metrics (OU@ε, PRA, FM/HR, D_t^f) are ``None`` or absent
when the forget set is not whole classes.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from unlearn_jax import seeding
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import mia, registry
from unlearn_jax.evaluation import representation as rep
from unlearn_jax.evaluation.outputs import accuracy_from_logits, model_outputs
from unlearn_jax.models import Model

SETS = ("forget", "retain", "test_forget", "test_retain")
# (header, metric key, format) of the outputs every model reports, before the registry's columns.
COLUMNS = (("UA", "UA", ".1f"), ("RA", "RA", ".1f"), ("TA", "TA", ".1f"),
           ("D_t^f acc", "acc/test_forget", ".1f"))


@dataclasses.dataclass(frozen=True)
class Context:
  """What every model's evaluation shares; ``shared[name]``: metric ``name``'s prepared value."""

  splits: Splits
  original: tuple
  retrains: tuple
  original_features: dict[str, np.ndarray]
  labels: dict[str, np.ndarray]
  shared: dict[str, Any]
  retrain_metrics: dict[str, float] | None = None


def _settings(settings: Mapping[str, registry.Settings] | None) -> dict[str, registry.Settings]:
  return registry.resolve({}) | dict(settings or {})


def _met(metric: registry.Metric, splits: Splits, original, retrains) -> bool:
  return all({"retrain": bool(retrains), "classes": bool(splits.forget_classes),
              "original": original is not None}[need] for need in metric.needs)


def _bar(items: list, desc: str, progress: bool):
  """``items`` with a progress bar whose postfix names the item in work."""
  bar = tqdm(items, desc=desc, disable=not progress, leave=False)
  for item in bar:
    bar.set_postfix_str(getattr(item, "name", str(item)))
    yield item


def prepare_context(model: Model, original: tuple, splits: Splits, retrains: Sequence[tuple], *,
                    settings: Mapping[str, registry.Settings] | None = None,
                    seed: int, progress: bool = False) -> Context:
  """θ_o's features, Retrain's outputs (of ``retrains[0]``) and every enabled metric's
  ``prepare`` (from ``seed``), for ``original`` = (params, model_state) and the Retrain models;
  ``progress``: a bar naming each preparation (its first call also compiles)."""
  settings = _settings(settings)
  retrains = tuple(retrains)
  todo = [m for m in registry.metrics()
          if m.prepare and settings[m.name].enabled and _met(m, splits, original, retrains)]
  shared = {m.name: m.prepare(model, original, splits, retrains, settings[m.name], seed=seed)
            for m in _bar(todo, "preparing the evaluation", progress)}
  original_features, labels = rep.feature_sets(model, *original, splits)
  retrain_metrics = (output_metrics(model, *retrains[0], splits, seed=seed) if retrains
                     else None)
  return Context(splits, original, retrains, original_features, labels, shared, retrain_metrics)


def accuracies(model: Model, params, model_state, splits: Splits) -> dict[str, float]:
  """Accuracies on D_f, D_r, D_t^f, D_t^r (%) and UA = 100 − Acc(D_f), RA, TA."""
  acc = {s: accuracy_from_logits(model_outputs(model, params, model_state,
                                               getattr(splits, s))[1],
                                 getattr(splits, s).labels) for s in SETS}
  out = {f"acc/{s}": v for s, v in acc.items()}
  return out | {"UA": 100.0 - acc["forget"], "RA": acc["retain"], "TA": acc["test_retain"]}


def output_metrics(model: Model, params, model_state, splits: Splits, *, seed: int) -> dict:
  """:func:`accuracies` and MIA (:func:`~unlearn_jax.evaluation.mia.mia_metrics`)."""
  return (accuracies(model, params, model_state, splits)
          | mia.mia_metrics(model, params, model_state, splits, seed=seed))


def evaluate_model(model: Model, params, model_state, context: Context, *,
                   settings: Mapping[str, registry.Settings] | None = None, seed: int,
                   name: str | None = None, progress: bool = False) -> dict[str, Any]:
  """The table's metrics for one model (floats or None) and ``details`` for plots.

  Runs every enabled registered metric whose needs the context meets; one with a ``models``
  setting only when ``name`` (the model's name: "original", "retrain", a method) is among them.
  With Retrain's outputs and MIA, adds the Avg. Gap (:func:`~unlearn_jax.evaluation.mia.
  gap_to_retrain`); then the feature summary: "norm/forget" = mean ‖z‖ over D_f,
  "CKA/original/forget" = CKA(Z_u, Z_o) on D_f and the 2-D ``projection``. ``progress``: a bar
  naming each metric in work.
  """
  settings = _settings(settings)
  splits = context.splits
  outputs = accuracies(model, params, model_state, splits)
  metrics: dict[str, Any] = dict(outputs)
  details: dict[str, Any] = {}
  if not splits.forget_classes:
    metrics["acc/test_forget"] = None
  todo = [m for m in registry.metrics()
          if settings[m.name].enabled and _met(m, splits, context.original, context.retrains)
          and name in getattr(settings[m.name], "models", (name,))]
  for metric in _bar(todo, f"evaluating {name or 'the model'}", progress):
    extra = ({"name": name} if metric.named else {}) | (
        {"outputs": outputs} if metric.outputs else {})
    values, more = metric.evaluate(model, params, model_state, context, settings[metric.name],
                                   seed=seed, **extra)
    metrics |= values
    details |= more
  if context.retrain_metrics is not None and "MIA" in metrics:
    metrics["gap"] = mia.gap_to_retrain(metrics, context.retrain_metrics)
  features, _ = rep.feature_sets(model, params, model_state, splits)
  metrics["norm/forget"] = float(np.linalg.norm(features["forget"], axis=1).mean())
  metrics["CKA/original/forget"] = float(rep.linear_cka(features["forget"],
                                                        context.original_features["forget"]))
  details["projection"] = projection(features, context.labels, seed=seed)
  return {"metrics": metrics, "details": details}


def columns(settings: Mapping[str, registry.Settings] | None = None
            ) -> tuple[tuple[str, str, str], ...]:
  """Every table column: the outputs' :data:`COLUMNS`, then each registered metric's (with
  ``settings``, also those its settings add, :func:`~unlearn_jax.evaluation.registry.columns`)."""
  return COLUMNS + registry.columns(settings)


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
  features = context.shared.get("representation", [])
  if len(features) < 2:
    return None
  return rep.noise_floor(features, labels=context.labels)


__all__ = ["COLUMNS", "Context", "accuracies", "columns", "evaluate_model", "noise_floor",
           "output_metrics", "prepare_context", "projection"]
