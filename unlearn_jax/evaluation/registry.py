"""The registry of table metrics and attacks: each registers one :class:`Metric` in its own module.

A record carries everything the experiment layer needs: its name (the key under
``config.evaluation``), its settings (a frozen dataclass of plain typed values, the config's
defaults), the table columns it contributes, what it needs (Retrain, class forgetting, θ_o),
its evaluate function and optionally a shared preparation and a report plot. The suite, the
config schema, the report's table and the runner's validation all read the registry, so a metric
defined in one file (and imported before the config is built) is run, tabulated and validated::

  @dataclasses.dataclass(frozen=True)
  class RetainNormSettings(registry.Settings):
    max_examples: int = 200                       # config.evaluation.retain_norm.max_examples

  def evaluate(model, params, model_state, context, settings, *, seed):
    features, _ = representation.feature_sets(model, params, model_state, context.splits,
                                              sets=("retain",), max_examples=settings.max_examples)
    return {"norm/retain": float(np.linalg.norm(features["retain"], axis=1).mean())}, {}

  registry.register(registry.Metric("retain_norm", evaluate, RetainNormSettings,
                                    columns=(("‖z‖ D_r", "norm/retain", ".2f"),)))

Built-in records come first, in the table's order (:data:`BUILTIN`), then others in the order
they were registered.
"""

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

NEEDS = ("retrain", "classes", "original")
# Built-in metric name → its module under unlearn_jax.evaluation, in the table's column order.
BUILTIN = {"mia": "mia", "ou": "over_unlearning", "pra": "prototypes", "recovery": "recovery",
           "inversion": "inversion", "representation": "representation",
           "relearn": "relearning", "relearn_retain": "retain_relearning",
           "weight_space": "weight_space", "tow": "tow", "uia": "unlearning_inversion"}


@dataclasses.dataclass(frozen=True)
class Settings:
  """A metric's settings: ``enabled`` plus, in subclasses, its own plain typed fields.

  A field ``models: tuple[str, ...]`` restricts the metric to the models of those names.
  """

  enabled: bool = True


@dataclasses.dataclass(frozen=True)
class Metric:
  """One metric or attack of the experiment table.

  Attributes:
    name: the key under ``config.evaluation``.
    evaluate: ``(model, params, model_state, context, settings, *, seed) -> (metrics, details)``;
      ``context`` is the suite's shared :class:`~unlearn_jax.evaluation.suite.Context`.
    settings: the :class:`Settings` subclass; its field defaults are the config's defaults.
    columns: ``(header, metric key, format)`` of the table columns it contributes.
    needs: a subset of :data:`NEEDS`: Retrain models (validated before training), whole forget
      classes, θ_o; the suite skips the metric on a run (context) without them.
    switch: the config value is a bare bool (``evaluation.<name> = True``) rather than a section.
    prepare: ``(model, original, splits, retrains, settings, *, seed) -> value`` computed once
      per experiment and read by ``evaluate`` as ``context.shared[name]``.
    plot: ``(file name, fn(models, path))`` drawn by the report from the results' models (on a
      ``matplotlib.figure.Figure``: no pyplot, so the caller's backend is left alone).
    named: ``evaluate`` also takes ``name=`` (the model's name: "original", "retrain", a
      method, or None), for a metric whose setting depends on the model (PRA's reference α).
    more_columns: ``settings -> columns`` that only some settings add (OU@ε's further modes).
    outputs: ``evaluate`` also takes ``outputs=``, the model's accuracies the suite has already
      measured (``acc/<set>``, UA, RA, TA), for a metric computed from them (ToW).
  """

  name: str
  evaluate: Callable[..., tuple[dict[str, Any], dict[str, Any]]]
  settings: type[Settings] = Settings
  columns: tuple[tuple[str, str, str], ...] = ()
  needs: tuple[str, ...] = ()
  switch: bool = False
  prepare: Callable[..., Any] | None = None
  plot: tuple[str, Callable[..., None]] | None = None
  named: bool = False
  more_columns: Callable[[Settings], tuple[tuple[str, str, str], ...]] | None = None
  outputs: bool = False


_METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
  """Adds ``metric`` to the registry and returns it.

  Raises:
    ValueError: a name already registered, an unknown need, settings that are not a
      :class:`Settings` dataclass, or a switch with settings beyond ``enabled``.
  """
  if metric.name in _METRICS:
    raise ValueError(f"metric {metric.name!r}: already registered.")
  unknown = set(metric.needs) - set(NEEDS)
  if unknown:
    raise ValueError(f"metric {metric.name!r}: unknown needs {sorted(unknown)}; allowed: "
                     f"{', '.join(NEEDS)}.")
  if not (isinstance(metric.settings, type) and issubclass(metric.settings, Settings)):
    raise ValueError(f"metric {metric.name!r}: settings must subclass registry.Settings.")
  if metric.switch and len(dataclasses.fields(metric.settings)) > 1:
    raise ValueError(f"metric {metric.name!r}: a switch has no settings beyond enabled.")
  _METRICS[metric.name] = metric
  return metric


def metrics() -> tuple[Metric, ...]:
  """Every registered metric: the built-ins in :data:`BUILTIN` order, then the others."""
  for module in BUILTIN.values():
    importlib.import_module(f"unlearn_jax.evaluation.{module}")
  builtin = list(BUILTIN)
  return tuple(sorted(_METRICS.values(), key=lambda m: builtin.index(m.name)
                      if m.name in BUILTIN else len(builtin)))


def defaults() -> dict[str, Any]:
  """The ``config.evaluation`` schema: name → bool (a switch) or a dict of settings defaults."""
  out = {}
  for metric in metrics():
    values = dataclasses.asdict(metric.settings())
    out[metric.name] = values["enabled"] if metric.switch else values
  return out


def _typed(hint, value, where: str):
  """``value`` checked against the type ``hint`` (lists become tuples, ints floats); raises
  ValueError naming ``where``."""
  if isinstance(value, list):
    value = tuple(value)
  union = typing.get_origin(hint) in (typing.Union, types.UnionType)
  for option in typing.get_args(hint) if union else (hint,):
    base = typing.get_origin(option) or option
    if option is type(None) and value is None:
      return value
    if base is float and isinstance(value, int | float) and not isinstance(value, bool):
      return float(value)
    if isinstance(base, type) and isinstance(value, base) and not (
        base is int and isinstance(value, bool)):
      return value
  raise ValueError(f"{where}: {value!r} is not a {hint}.")


def resolve(evaluation: Mapping[str, Any]) -> dict[str, Settings]:
  """Settings of every registered metric from a plain ``config.evaluation`` mapping (a name →
  bool for a switch, or → dict of fields); names left out take their defaults.

  Raises:
    ValueError: an unknown metric or field, or a value of the wrong type, naming
      ``config.evaluation.<name>[.<field>]``.
  """
  known = {m.name: m for m in metrics()}
  unknown = set(evaluation) - set(known)
  if unknown:
    raise ValueError(f"config.evaluation.{sorted(unknown)[0]}: unknown metric; registered: "
                     f"{', '.join(known)}.")
  out = {}
  for name, metric in known.items():
    value = evaluation.get(name, {})
    if metric.switch:
      value = {"enabled": value} if isinstance(value, bool) else value
    if not isinstance(value, Mapping):
      raise ValueError(f"config.evaluation.{name}: expected a dict of settings, got {value!r}.")
    hints = typing.get_type_hints(metric.settings)
    extra = set(value) - set(hints)
    if extra:
      raise ValueError(f"config.evaluation.{name}.{sorted(extra)[0]}: unknown setting; known: "
                       f"{', '.join(hints)}.")
    out[name] = metric.settings(**{k: _typed(hints[k], v, f"config.evaluation.{name}.{k}")
                                   for k, v in value.items()})
  return out


def columns(settings: Mapping[str, Settings] | None = None) -> tuple[tuple[str, str, str], ...]:
  """The table columns of every registered metric, in registry order; with ``settings`` (name →
  :class:`Settings`) each enabled metric's ``more_columns`` follow its own."""
  out = []
  for m in metrics():
    out += m.columns
    s = (settings or {}).get(m.name)
    if m.more_columns and s is not None and s.enabled:
      out += m.more_columns(s)
  return tuple(out)


__all__ = ["BUILTIN", "NEEDS", "Metric", "Settings", "columns", "defaults", "metrics", "register",
           "resolve"]
