"""Weight-space predictors of relearning (Siddiqui et al., 2025; docs/math.md §6.6): the distance
‖θ_u − θ_o‖₂ and linear mode connectivity along the segment θ(t) = (1 − t) θ_o + t θ_u.

A method that stays close to θ_o and in its linearly connected basin tends to fall to relearning
(the paper's finding on CIFAR-10); Retrain is the reference. Along the segment the loss and
accuracy of each set are measured at ``points`` evenly spaced t ∈ [0, 1]; batch-norm running
statistics are interpolated with the parameters (as the reference code's state-dict mixing does;
the small CNN has none). The barrier of a set is the largest drop below the straight line between
the endpoints (Frankle et al., 2020):

  B_acc = max_t [(1 − t) A(0) + t A(1) − A(t)],   B_loss = max_t [L(t) − (1 − t) L(0) − t L(1)].

Sets: D_f, D_r and the test set of kept classes (all of D_t in random forgetting), each capped at
``max_examples`` drawn by ``host_rng(seed, "lmc", set)``, the same for every model.
"""

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.evaluation.retain_relearning import plot_curve_panels
from unlearn_jax.models import Model

SETS = {"forget": "forget", "retain": "retain", "test": "test_retain"}  # name → Splits field


def parameter_distance(params, reference) -> dict[str, float]:
  """{"l2": ‖θ − θ_ref‖₂, "relative": ‖θ − θ_ref‖₂ / ‖θ_ref‖₂} over every parameter (batch-norm
  statistics are not parameters).

  Raises:
    ValueError: the two pytrees differ in structure or shapes.

  >>> d = parameter_distance({"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([0.0, 2.0])})
  >>> round(d["l2"], 4), round(d["relative"], 4)  # √13, √13 / 2
  (3.6056, 1.8028)
  """
  shapes = jax.tree.map(jnp.shape, params), jax.tree.map(jnp.shape, reference)
  if shapes[0] != shapes[1]:
    raise ValueError("params: its structure or shapes differ from the reference's.")
  diff = sum(float(jnp.sum(jnp.square(a - b))) for a, b in
             zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True))
  norm = sum(float(jnp.sum(jnp.square(b))) for b in jax.tree.leaves(reference))
  return {"l2": float(np.sqrt(diff)), "relative": float(np.sqrt(diff / norm)) if norm else None}


@jax.jit
def interpolate(start, end, t):
  """(1 − t)·start + t·end, leaf by leaf (parameters, or batch-norm statistics)."""
  return jax.tree.map(lambda a, b: (1.0 - t) * a + t * b, start, end)


def barrier(values, *, higher_is_better: bool) -> float:
  """The largest drop of ``values`` (at t evenly spaced over [0, 1]) below the straight line
  between its endpoints: max_t [line(t) − v(t)] for an accuracy, max_t [v(t) − line(t)] for a
  loss; 0 when the curve never falls below (rises above) the line.

  >>> barrier([90.0, 40.0, 80.0], higher_is_better=True)
  45.0
  """
  values = np.asarray(values, np.float64)
  t = np.linspace(0.0, 1.0, len(values))
  gap = (values[0] + t * (values[-1] - values[0]) - values)[1:-1]  # 0 at the endpoints
  return float(np.max(np.append(gap if higher_is_better else -gap, 0.0)))


def _loss_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return (float(-np.mean(log_p[np.arange(len(labels)), labels])),
          float(100.0 * np.mean(np.argmax(logits, axis=1) == labels)))


def segment(model: Model, start: tuple, end: tuple, sets: Mapping[str, ArrayDataset], *,
            points: int = 11, batch_size: int = 512) -> dict:
  """Loss and accuracy of θ(t) = (1 − t) θ_start + t θ_end on each set, at ``points`` evenly
  spaced t ∈ [0, 1]; batch-norm statistics interpolated too.

  Args:
    start, end: (params, model_state) of θ_o and θ_u.
    sets: name → a non-empty set.

  Returns:
    {"t": [points], name: {"loss": mean CE per t, "accuracy": % per t}}; the endpoints are the
    two models' own values.

  Raises:
    ValueError: fewer than 2 points, or an empty set (naming it).
  """
  if points < 2:
    raise ValueError(f"points: {points}; need ≥ 2 (the two endpoints).")
  for name, data in sets.items():
    if len(data) == 0:
      raise ValueError(f"sets['{name}']: empty.")
  ts = np.linspace(0.0, 1.0, points)
  out = {"t": ts.tolist(), **{name: {"loss": [], "accuracy": []} for name in sets}}
  for t in ts:
    params, model_state = interpolate(start, end, jnp.float32(t))
    for name, data in sets.items():
      loss, acc = _loss_accuracy(model_outputs(model, params, model_state, data,
                                               batch_size=batch_size)[1], data.labels)
      out[name]["loss"].append(loss)
      out[name]["accuracy"].append(acc)
  return out


def lmc_sets(splits: Splits, *, max_examples: int, seed: int) -> dict[str, ArrayDataset]:
  """D_f, D_r and the kept test set, each capped at ``max_examples`` (a seeded draw); empty sets
  are left out."""
  out = {}
  for name, field in SETS.items():
    data = getattr(splits, field)
    if len(data) > max_examples:
      data = data.subset(np.sort(seeding.host_rng(seed, "lmc", name).choice(
          len(data), max_examples, replace=False)))
    if len(data):
      out[name] = data
  return out


@dataclasses.dataclass(frozen=True)
class WeightSpaceSettings(registry.Settings):
  """``points`` t on the segment θ_o → θ_u (odd, so t = ½ is one of them), at most
  ``max_examples`` images per set; off unless a config turns it on."""

  enabled: bool = False
  points: int = 11
  max_examples: int = 1000

  def __post_init__(self):
    if self.points < 3 or self.points % 2 == 0:
      raise ValueError(f"config.evaluation.weight_space.points: {self.points}; allowed: an odd "
                       "int ≥ 3 (t = ½ is a point).")
    if self.max_examples < 1:
      raise ValueError(f"config.evaluation.weight_space.max_examples: {self.max_examples}; "
                       "must be ≥ 1.")


def _prepare(model: Model, original: tuple, splits: Splits, retrains,
             settings: WeightSpaceSettings, *, seed: int) -> dict[str, ArrayDataset]:
  """The capped sets, drawn once per experiment."""
  return lmc_sets(splits, max_examples=settings.max_examples, seed=seed)


def _evaluate(model: Model, params, model_state, context, settings: WeightSpaceSettings, *,
              seed: int) -> tuple[dict, dict]:
  """"weight/l2", "weight/relative", per set "lmc/barrier/<set>" (accuracy, points),
  "lmc/loss_barrier/<set>" and "lmc/mid/<set>" (accuracy at t = ½); details: the curves."""
  original = context.original
  curves = segment(model, original, (params, model_state), context.shared["weight_space"],
                   points=settings.points)
  metrics = {f"weight/{k}": v for k, v in parameter_distance(params, original[0]).items()}
  mid = settings.points // 2
  for name in SETS:
    curve = curves.get(name)
    metrics |= {f"lmc/barrier/{name}": curve and barrier(curve["accuracy"],
                                                         higher_is_better=True),
                f"lmc/loss_barrier/{name}": curve and barrier(curve["loss"],
                                                              higher_is_better=False),
                f"lmc/mid/{name}": curve and curve["accuracy"][mid]}
  return metrics, {"lmc": curves}


def plot_lmc(models: dict, path) -> None:
  """Accuracy along θ_o → θ_u, one line per model, Retrain dashed: one panel per set
  (``details["lmc"]``)."""
  runs = [(n, m["details"]["lmc"]) for n, m in models.items() if "lmc" in m.get("details", {})]
  plot_curve_panels(path, {
      f"accuracy on {name} (%)": {n: (r["t"], r[name]["accuracy"]) for n, r in runs if name in r}
      for name in SETS}, xlabel="t  (θ = (1 − t) θ_o + t θ_u)",
      title="Linear mode connectivity from the original to each model (Retrain dashed)")


COLUMNS = (("‖θ−θ_o‖", "weight/l2", ".2f"), ("LMC barrier", "lmc/barrier/test", ".1f"),
           ("LMC D_f@½", "lmc/mid/forget", ".1f"))

METRIC = registry.register(registry.Metric(
    "weight_space", _evaluate, WeightSpaceSettings, needs=("original",), prepare=_prepare,
    plot=("lmc.png", plot_lmc), more_columns=lambda _: COLUMNS))


__all__ = ["COLUMNS", "METRIC", "SETS", "WeightSpaceSettings", "barrier", "interpolate",
           "lmc_sets", "parameter_distance", "plot_lmc", "segment"]
