"""What an unlearning method is, and the registry that names them.

A method is a plan builder ``build(hp, original, data, seed) -> Plan`` registered with the data it
reads and its hyper-parameters, all in its own file::

    @register("ga", reads=("forget",), description="Gradient ascent on D_f's CE.",
              defaults={"learning_rate": 1e-4, ...}, profiles={"resnet18": {...}})
    def ga(hp, original, data, seed) -> Plan: ...

Data access is enforced: the method's :class:`UnlearningData` holds only the sets it reads. Its
hyper-parameters are ``defaults`` (the ``small`` profile) updated by ``profiles[name]`` for another
profile; overrides are checked by key and type against them (:meth:`Method.hparams`).
"""

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import Model
from unlearn_jax.objectives import forget_mask
from unlearn_jax.training.plan import Plan
from unlearn_jax.validation import check_numbers

DATA_SETS = ("forget", "retain")
BASE_PROFILE = "small"


@dataclasses.dataclass(frozen=True)
class Original:
  """The trained model that unlearning starts from (θ_o), never modified."""

  model: Model
  params: Any
  model_state: Any


@dataclasses.dataclass(frozen=True)
class UnlearningData:
  """What a method may see; sets it did not declare are ``None``. Class ids are metadata."""

  forget: ArrayDataset | None
  retain: ArrayDataset | None
  forget_classes: tuple[int, ...]
  num_classes: int

  def require(self, name: str, method: str) -> ArrayDataset:
    """The ``name`` set; ValueError if the method did not declare it or it is empty."""
    data = getattr(self, name)
    if data is None:
      raise ValueError(f"method '{method}' needs {name} data, but none was given (it must "
                       f"declare '{name}' in its reads and the {name} set must be non-empty).")
    return data

  @property
  def forget_mask(self) -> np.ndarray:
    """bool [C], True on the forgotten classes.

    Raises:
      ValueError: every class is forgotten (a masked softmax over no class is undefined).
    """
    return forget_mask(self.forget_classes, self.num_classes)


class HParams(Mapping):
  """A method's hyper-parameters: read-only, by key or attribute; nested dicts are HParams."""

  def __init__(self, values: Mapping[str, Any]):
    self._values = {k: HParams(v) if isinstance(v, Mapping) else v for k, v in values.items()}

  def __getitem__(self, key: str):
    return self._values[key]

  def __getattr__(self, key: str):
    try:
      return self.__dict__["_values"][key]
    except KeyError:
      raise AttributeError(f"no hyper-parameter {key!r}; known: "
                           f"{', '.join(sorted(self._values))}.") from None

  def __iter__(self) -> Iterator[str]:
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def __repr__(self) -> str:
    return f"HParams({self.to_dict()!r})"

  def to_dict(self) -> dict[str, Any]:
    """Plain nested dicts (for JSON and config hashes)."""
    return {k: v.to_dict() if isinstance(v, HParams) else v for k, v in self._values.items()}


def _checked(value, allowed: list, field: str):
  """``value`` if its type is that of one of the ``allowed`` (profile) values (ints pass as
  floats, lists as tuples); any value where some profile has None."""
  if any(a is None for a in allowed):
    return value
  kinds = {type(a) for a in allowed}
  if isinstance(value, list) and tuple in kinds:
    return tuple(value)
  if float in kinds and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if type(value) not in kinds:
    names = " or ".join(sorted(k.__name__ for k in kinds))
    raise ValueError(f"{field}: {value!r} is a {type(value).__name__}; expected {names} "
                     f"(default {allowed[0]!r}).")
  return value


def _merge(base: Mapping, overrides: Mapping, field: str,
           profiles: list[Mapping] | None = None) -> dict:
  """``base`` updated by ``overrides`` (nested dicts merge); every key must exist in ``base``
  and, given the ``profiles``, every value must have the type it has in one of them."""
  out = dict(base)
  for key, value in overrides.items():
    if key not in base:
      raise ValueError(f"{field}.{key}: unknown hyper-parameter; known: "
                       f"{', '.join(sorted(base))}.")
    allowed = None if profiles is None else [p[key] for p in profiles if key in p]
    if isinstance(base[key], Mapping) and isinstance(value, Mapping):
      out[key] = _merge(base[key], value, f"{field}.{key}", None if allowed is None else
                        [a for a in allowed if isinstance(a, Mapping)])
    else:
      out[key] = value if allowed is None else _checked(value, allowed, f"{field}.{key}")
  return out


Build = Callable[[HParams, Original, UnlearningData, int], Plan]


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered unlearning method: its plan builder, the data sets it reads, its
  hyper-parameters (``defaults``, and per profile the values that differ), a description and,
  for a variant of another method (``spotter_plus_ga``), that method's name: a default
  experiment runs every method that is not a variant."""

  name: str
  reads: frozenset[str]
  build: Build
  defaults: Mapping[str, Any]
  profiles: Mapping[str, Mapping[str, Any]]
  description: str
  variant_of: str | None = None

  def hparams(self, profile: str = BASE_PROFILE, overrides: Mapping[str, Any] | None = None, *,
              field: str | None = None) -> HParams:
    """The hyper-parameters of ``profile`` with ``overrides`` (nested dicts merge).

    Raises:
      ValueError: an unknown profile, an override of an unknown key or of the wrong type, or
        a number out of range (:mod:`unlearn_jax.validation`), named as ``field.key``
        (default field ``hparams.<method>``).
    """
    if profile not in known_profiles():
      raise ValueError(f"profile: {profile!r} unknown; known: {', '.join(known_profiles())}.")
    field = field or f"hparams.{self.name}"
    every = [_merge(self.defaults, p, field) for p in (*self.profiles.values(), {})]
    base = _merge(self.defaults, self.profiles.get(profile, {}), field)
    values = _merge(base, overrides or {}, field, every)
    check_numbers(values, field)
    return HParams(values)


METHODS: dict[str, Method] = {}


def known_profiles() -> tuple[str, ...]:
  """``small`` and every profile a registered method names."""
  names = {BASE_PROFILE} | {p for m in METHODS.values() for p in m.profiles}
  return (BASE_PROFILE, *sorted(names - {BASE_PROFILE}))


def register(name: str, *, reads, description: str, defaults: Mapping[str, Any],
             profiles: Mapping[str, Mapping[str, Any]] | None = None,
             variant_of: str | None = None) -> Callable[[Build], Build]:
  """Decorator: registers ``build`` as method ``name`` (the ``small`` profile is ``defaults``;
  another profile is ``defaults`` updated by ``profiles[profile]``, or ``defaults`` itself)."""
  reads = frozenset(reads)
  if bad := reads - set(DATA_SETS):
    raise ValueError(f"method '{name}': reads {sorted(bad)}; allowed {DATA_SETS}.")

  def add(build: Build) -> Build:
    method = Method(name, reads, build, dict(defaults), dict(profiles or {}), description,
                    variant_of)
    for profile, values in method.profiles.items():  # every key a profile sets is a default
      _merge(method.defaults, values, f"{name} profile '{profile}'")
    METHODS[name] = method
    return build

  return add


def get_method(name: str, field: str = "method") -> Method:
  """The registered method called ``name``.

  Raises:
    ValueError: unknown name (names ``field`` and lists the known ones).
  """
  if name not in METHODS:
    raise ValueError(f"{field}: unknown method {name!r}; known: {', '.join(sorted(METHODS))}.")
  return METHODS[name]


def method_data(method: Method, forget: ArrayDataset | None, retain: ArrayDataset | None,
                forget_classes, num_classes: int) -> UnlearningData:
  """The data as ``method`` may see it: sets it does not read are ``None``."""
  return UnlearningData(forget=forget if "forget" in method.reads else None,
                        retain=retain if "retain" in method.reads else None,
                        forget_classes=tuple(forget_classes), num_classes=num_classes)
