"""Orbax checkpoints of train states, with their config and metrics saved beside them.

:class:`Checkpointer` wraps an ``orbax.checkpoint.CheckpointManager`` whose every step holds the
state and a JSON ``meta`` (kind, config, fingerprint of the parameter shapes, metrics, whether the
run finished). :func:`cache_dir_for` keys a directory by the config, so an original or Retrain
model is trained once and reused; an unfinished run in that directory is resumed.
:func:`save_model` / :func:`load_model` keep one finished model (params and model state) with what
is needed to rebuild its :class:`~unlearn_jax.models.Model` and to tell which config made it.
:func:`use_compilation_cache` keeps XLA's compiled programs on disk, so a rerun skips compiling.
"""

import hashlib
import json
import os
import pathlib
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from unlearn_jax import distributed
from unlearn_jax.models import Model, make_model
from unlearn_jax.training import sharding


class CheckpointMismatchError(ValueError):
  """A checkpoint whose parameter tree differs from the model it is restored into."""


class CorruptCheckpointError(ValueError):
  """A checkpoint that cannot be read (a truncated or overwritten file); the message names the
  directory to delete."""


def write_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file beside it and ``os.replace``, so a
  killed process leaves the old file or the new one, never part of one."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def read_json(path: str | os.PathLike, recover: str):
  """The JSON value in ``path``.

  Raises:
    ValueError: the file is not valid JSON (names the file, the fault and ``recover``).
  """
  try:
    return json.loads(pathlib.Path(path).read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON, the file is damaged ({e}); {recover}.") from e


def config_hash(config: Any) -> str:
  """Stable 12-hex-digit hash of a JSON-serialisable config."""
  text = json.dumps(config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir_for(root: str | os.PathLike, kind: str, config: Any) -> pathlib.Path:
  """``root/<kind>-<hash of config>``: where a model trained from ``config`` is cached."""
  return pathlib.Path(root).absolute() / f"{kind}-{config_hash(config)}"


def use_compilation_cache(directory: str | os.PathLike, *, min_compile_seconds: float = 0.0):
  """Store every compiled program in ``directory`` (JAX's persistent compilation cache) and read
  it back in later processes. Call before the process's first compilation; programs that took
  less than ``min_compile_seconds`` to compile are not stored."""
  path = pathlib.Path(directory).absolute()
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)


def fingerprint(tree) -> dict[str, str]:
  """Shape and dtype of every leaf, by path: identifies an architecture."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p): f"{np.dtype(x.dtype).name}{list(np.shape(x))}"
          for p, x in leaves}


def _describe_mismatch(stored: dict, expected: dict) -> str:
  missing = sorted(set(expected) - set(stored))[:3]
  extra = sorted(set(stored) - set(expected))[:3]
  differ = [f"{k}: stored {stored[k]}, expected {expected[k]}"
            for k in sorted(set(stored) & set(expected)) if stored[k] != expected[k]][:3]
  return "; ".join(filter(None, [
      f"missing in checkpoint {missing}" if missing else "",
      f"not in this model {extra}" if extra else "",
      ", ".join(differ)]))


class Checkpointer:
  """Saves and restores ``(state, meta)`` pairs under ``directory`` (absolute path)."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "meta"),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    """Saves asynchronously; returns once the arrays are copied off the devices."""
    meta = {**meta, "step": int(step), "fingerprint": fingerprint(state)}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def meta(self, step: int | None = None) -> dict | None:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return self._read(step, meta=ocp.args.JsonRestore())["meta"]

  def _read(self, step: int, **items):
    """The ``items`` of ``step``; a failure to read them is one :class:`CorruptCheckpointError`
    naming the directory to delete."""
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax, TensorStore and JSON errors of a damaged file
      cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      raise CorruptCheckpointError(
          f"checkpoint: {self.directory} step {step} cannot be read ({type(e).__name__}: "
          f"{cause}); delete {self.directory} and run again (it is trained again from the "
          "start).") from e

  def restore(self, abstract_state, step: int | None = None):
    """Restores onto the structure, shapes and shardings of ``abstract_state``; leaves without a
    sharding (e.g. from ``jax.eval_shape``) are restored replicated over all devices, so a
    checkpoint restores on any device layout.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
      CheckpointMismatchError: the checkpoint holds another architecture (names the leaves).
      CorruptCheckpointError: a file of the checkpoint is damaged (names the directory).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"checkpoint: no checkpoint in {self.directory}.")
    stored, expected = self.meta(step)["fingerprint"], fingerprint(abstract_state)
    if stored != expected:
      raise CheckpointMismatchError(
          f"checkpoint: {self.directory} step {step} holds another architecture than the one "
          f"requested ({_describe_mismatch(stored, expected)}).")
    default = sharding.replicated(sharding.make_mesh())

    def target(leaf):
      struct = ocp.utils.to_shape_dtype_struct(leaf)
      if getattr(struct, "sharding", None) is None:
        struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=default)
      return struct

    abstract = jax.tree.map(target, abstract_state)
    return self._read(step, state=ocp.args.StandardRestore(abstract))["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def model_spec(name: str, *, num_classes: int, input_shape, mean, std, options=None) -> dict:
  """The plain-JSON arguments of :func:`~unlearn_jax.models.make_model` that rebuild a model."""
  return {"name": name, "num_classes": int(num_classes),
          "input_shape": [int(d) for d in input_shape], "mean": [float(m) for m in mean],
          "std": [float(s) for s in std], "options": dict(options or {})}


def model_from_spec(spec: dict) -> Model:
  """The :class:`~unlearn_jax.models.Model` of a :func:`model_spec`."""
  return make_model(spec["name"], num_classes=spec["num_classes"],
                    input_shape=spec["input_shape"], mean=spec["mean"], std=spec["std"],
                    **spec["options"])


def save_model(directory: str | os.PathLike, params, model_state, *, spec: dict,
               meta: dict) -> None:
  """Keeps a finished model in ``directory``: ``{"params", "model_state"}`` and ``meta`` (which
  must hold the ``key`` of the config that made it) with the model's :func:`model_spec`.

  A model already there is replaced. Orbax writes into a temporary folder and renames it when
  complete, so a killed save leaves no model rather than part of one. Every process calls it.
  """
  directory = pathlib.Path(directory).absolute()
  if directory.exists() and distributed.is_writer():
    shutil.rmtree(directory)
  with Checkpointer(directory, max_to_keep=1) as ckpt:
    ckpt.save(0, {"params": params, "model_state": model_state},
              {**meta, "model": spec, "complete": True})
    ckpt.wait()


def read_model_meta(directory: str | os.PathLike) -> dict | None:
  """The ``meta`` of the model kept in ``directory``; None if there is none.

  Raises:
    CorruptCheckpointError: the directory holds a damaged model (names it).
  """
  directory = pathlib.Path(directory).absolute()
  if not directory.is_dir():
    return None
  with Checkpointer(directory, max_to_keep=1) as ckpt:
    meta = ckpt.meta()
  return meta if meta and meta.get("complete") else None


def load_model(directory: str | os.PathLike, key: str | None = None):
  """``(model, params, model_state, meta)`` of the model kept in ``directory``.

  Args:
    key: if given, the config key the model must have been made with.

  Raises:
    FileNotFoundError: no finished model in ``directory``.
    ValueError: the model was made by another config (``key`` differs).
    CorruptCheckpointError: a damaged file (names the directory to delete).
  """
  directory = pathlib.Path(directory).absolute()
  meta = read_model_meta(directory)
  if meta is None:
    raise FileNotFoundError(f"model: no finished model in {directory}.")
  if key is not None and meta.get("key") != key:
    raise ValueError(f"model: {directory} was made by another config (key {meta.get('key')!r}, "
                     f"expected {key!r}); run the experiment again to replace it.")
  model = model_from_spec(meta["model"])
  abstract = jax.eval_shape(lambda: dict(zip(("params", "model_state"),
                                             model.init(jax.random.key(0)), strict=True)))
  with Checkpointer(directory, max_to_keep=1) as ckpt:
    state = jax.device_get(ckpt.restore(abstract))
  return model, state["params"], state["model_state"], meta
