"""Tug of War (ToW; Zhao et al., 2024, "What makes unlearning hard and what to do about it", the
RUM paper; docs/math.md §6.7): how close a model's accuracies are to Retrain's on the forget,
retain and test sets at once,

  ToW(θ_u, θ_r) = Π_{S ∈ {D_f, D_r, D_t}} (1 − |Acc(θ_u; S) − Acc(θ_r; S)| / 100) ∈ [0, 1],

1 for a model that matches Retrain everywhere (Retrain against itself). As in the reference code
(kairanzhao/RUM, ``surgical_plugins/analysis.py``) each trial compares with that trial's Retrain,
and trials are summarised by the mean and a 95 % Student-t interval (the table's "t:" format,
:func:`unlearn_jax.summaries.t_interval`). The test set is D_t^r, the table's TA: the kept
classes' test images in class forgetting, all of D_t in random forgetting.
"""

import dataclasses
import math
from collections.abc import Mapping

from unlearn_jax.evaluation import registry
from unlearn_jax.models import Model

SETS = {"forget": "acc/forget", "retain": "acc/retain", "test": "acc/test_retain"}


def tug_of_war(accuracies: Mapping[str, float], retrain: Mapping[str, float]) -> float:
  """Π_S (1 − |a_S − r_S| / 100) over S = forget, retain, test (accuracies in %).

  Args:
    accuracies, retrain: θ_u's and θ_r's "acc/forget", "acc/retain", "acc/test_retain".

  Raises:
    ValueError: a missing key, or a value that is not a finite number in [0, 100] (naming it).

  >>> acc = {"acc/forget": 10.0, "acc/retain": 98.0, "acc/test_retain": 90.0}
  >>> ret = {"acc/forget": 0.0, "acc/retain": 100.0, "acc/test_retain": 90.0}
  >>> round(tug_of_war(acc, ret), 4)  # 0.9 · 0.98 · 1
  0.882
  """
  out = 1.0
  for key in SETS.values():
    values = []
    for field, given in (("accuracies", accuracies), ("retrain", retrain)):
      value = given.get(key)
      if (isinstance(value, bool) or not isinstance(value, int | float)
          or not math.isfinite(value) or not 0.0 <= value <= 100.0):
        raise ValueError(f"{field}['{key}']: {value!r}; expected an accuracy in [0, 100] (%).")
      values.append(float(value))
    out *= 1.0 - abs(values[0] - values[1]) / 100.0
  return out


@dataclasses.dataclass(frozen=True)
class ToWSettings(registry.Settings):
  """ToW against the trial's Retrain (its first seed, the table's Retrain row); off unless a
  config turns it on."""

  enabled: bool = False


def _evaluate(model: Model, params, model_state, context, settings: ToWSettings, *, seed: int,
              outputs: Mapping[str, float]) -> tuple[dict, dict]:
  """"tow": :func:`tug_of_war` of the model's accuracies against Retrain's."""
  return {"tow": tug_of_war(outputs, context.retrain_metrics)}, {}


COLUMNS = (("ToW (95% t)", "tow", "t:.3f"),)

METRIC = registry.register(registry.Metric(
    "tow", _evaluate, ToWSettings, needs=("retrain",), outputs=True,
    more_columns=lambda _: COLUMNS))


__all__ = ["COLUMNS", "METRIC", "SETS", "ToWSettings", "tug_of_war"]
