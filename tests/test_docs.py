"""Every module of unlearn_jax has a module docstring, and every public function or class it
defines has a docstring of its own."""

import importlib
import inspect
import pkgutil

import pytest

import unlearn_jax


def _modules():
  yield unlearn_jax
  for info in pkgutil.walk_packages(unlearn_jax.__path__, unlearn_jax.__name__ + "."):
    yield importlib.import_module(info.name)


def _has_docstring(obj) -> bool:
  """A docstring written for ``obj``: not the "Name(field, ...)" that dataclasses and NamedTuples
  generate."""
  doc = obj.__doc__
  return bool(doc) and not (inspect.isclass(obj) and doc.startswith(obj.__name__ + "("))


def undocumented() -> list[str]:
  """'module' or 'module.name' for each module and public definition without a docstring."""
  missing = []
  for module in _modules():
    if not module.__doc__:
      missing.append(module.__name__)
    for name, obj in vars(module).items():
      target = inspect.unwrap(obj) if callable(obj) else obj  # through functools.cache, jax.jit
      if (not name.startswith("_") and (inspect.isfunction(target) or inspect.isclass(target))
          and getattr(obj, "__module__", None) == module.__name__ and not _has_docstring(obj)):
        missing.append(f"{module.__name__}.{name}")
  return missing


def test_every_public_name_has_a_docstring():
  missing = undocumented()
  if missing:
    pytest.fail(f"{len(missing)} without a docstring:\n" + "\n".join(missing), pytrace=False)
