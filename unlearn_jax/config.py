"""Experiment configs: ml_collections ``get_config(arg)`` files with ``--config.x=y`` overrides.

A config file is a Python file defining ``get_config(arg=None) -> ConfigDict`` (the big_vision /
Flax-examples convention). ``load_config("experiments/digits.py:quick", ["--config.seed=3"])``
loads it with ``arg="quick"`` and applies the overrides; the result is locked, so an unknown key
is an error naming the key.
"""

import ast
import importlib.util
import pathlib

import ml_collections

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _resolve(spec: str) -> tuple[pathlib.Path, str | None]:
  path, _, arg = spec.partition(":")
  candidate = pathlib.Path(path)
  if not candidate.suffix and not candidate.exists():
    candidate = EXPERIMENTS_DIR / f"{path}.py"
  if not candidate.exists():
    known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py")) if EXPERIMENTS_DIR.exists() else []
    raise FileNotFoundError(f"config: {path!r} is neither a file nor a known experiment "
                            f"({', '.join(known)}).")
  return candidate, arg or None


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_override(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  """Sets ``config.a.b = value``; raises ValueError naming an unknown key or a wrong type."""
  *parents, leaf = dotted.split(".")
  node = config
  for i, part in enumerate(parents):
    if part not in node:
      raise ValueError(f"config.{'.'.join(parents[:i + 1])}: unknown key.")
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ValueError(f"config.{dotted}: unknown key.")
  try:
    if isinstance(node[leaf], tuple) and isinstance(value, list):
      value = tuple(value)
    node[leaf] = value
  except TypeError as e:
    raise ValueError(f"config.{dotted}: {e}") from e


def load_config(spec: str, overrides: tuple[str, ...] | list[str] = ()
                ) -> ml_collections.ConfigDict:
  """Loads ``path[:arg]`` (or a name under ``experiments/``) and applies ``--config.k=v`` items.

  Raises:
    FileNotFoundError: no such config.
    ValueError: a malformed override, an unknown key or a value of the wrong type.
  """
  path, arg = _resolve(spec)
  module_spec = importlib.util.spec_from_file_location(f"unlearn_jax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config: {path} defines no get_config(arg=None).")
  config = module.get_config(arg)
  config.lock()
  for item in overrides:
    text = item[2:] if item.startswith("--") else item
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("config."):
      raise ValueError(f"override {item!r}: expected --config.key=value.")
    apply_override(config, key[len("config."):], _parse_value(value))
  return config
