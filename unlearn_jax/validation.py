"""Checks of numbers before any work: config fields, method hyper-parameters, recipes.

A value is checked by the rule its dotted field path matches first (by key name, so one rule
covers every method's ``epochs``, ``batch_size``, ``learning_rate``, …); a tuple is checked
element by element; ``None`` (off) passes. The error names
the full path and what is allowed.
"""

import math
import re
from collections.abc import Callable, Mapping

from unlearn_jax.optim import OPTIMIZERS, SCHEDULES


def _int(minimum: int, note: str = "") -> tuple[Callable[[object], bool], str]:
  return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
          f"an int ≥ {minimum}{note}")


def _real(low: float, high: float = math.inf, *, open_low=False, open_high=False):
  def ok(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
      return False
    return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

  return ok, (f"a finite number in {'(' if open_low else '['}{low}, "
              f"{high}{')' if open_high else ']'}" if math.isfinite(high) else
              f"a finite number {'>' if open_low else '≥'} {low}")


# (pattern searched in the dotted path, (check, what is allowed)); the first match applies.
RULES: tuple[tuple[str, tuple], ...] = (
    (r"(^|\.)(original|recipe)\.epochs$", _int(1)),
    (r"epochs$", _int(0)),
    (r"(batch_size|_batch)$", _int(1)),
    (r"learning_rate$", _real(0.0, open_low=True)),
    (r"(^|\.)checkpoint_every$", _int(0, " (0: no checkpoints)")),
    (r"(^|\.)num_devices$", _int(0, " (0: all devices)")),
    (r"steps$", _int(0)),
    (r"(shots|num_draws|num_images|restarts|iterations|copies|per_class|\.k)$", _int(1)),
    (r"(^|\.)(seed|seeds|trials|retrain_seeds)$",
     (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int")),
    (r"(^|\.)calibration_fraction$", _real(0.0, 1.0, open_low=True, open_high=True)),
    (r"fraction$", _real(0.0, 1.0, open_low=True)),
    (r"(threshold|accuracy)$", _real(0.0, 100.0)),
    (r"(momentum|weight_decay|eps|sigma|step_size)$", _real(0.0)),
    (r"temperature$", _real(0.0, open_low=True)),
    (r"optimizer$", (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}")),
    (r"(^|\.)(original|recipe)\.schedule$",
     (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}")),
)


def _rule(field: str):
  for pattern, rule in RULES:
    if re.search(pattern, field):
      return rule
  return None


def check_value(value, field: str) -> None:
  """Raises ValueError naming ``field`` if ``value`` breaks the rule its path matches (any
  float must at least be finite); ``None`` passes, a tuple or list is checked per element."""
  if value is None:
    return
  if isinstance(value, tuple | list):
    for item in value:
      check_value(item, field)
    return
  rule = _rule(field)
  if rule is None:
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"{field}: {value!r} is not allowed; expected a finite number.")
    return
  ok, allowed = rule
  if not ok(value):
    raise ValueError(f"{field}: {value!r} is not allowed; expected {allowed}.")


def check_numbers(values: Mapping, field: str, *, skip: tuple[str, ...] = ()) -> None:
  """:func:`check_value` on every leaf of the nested mapping ``values`` (paths ``field.key…``),
  except the top-level keys in ``skip``."""
  for key, value in values.items():
    if key in skip:
      continue
    if isinstance(value, Mapping):
      check_numbers(value, f"{field}.{key}")
    else:
      check_value(value, f"{field}.{key}")


__all__ = ["RULES", "check_numbers", "check_value"]
