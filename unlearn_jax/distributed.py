"""Multi-process runs on JAX's own runtime: one process per host (or per accelerator), all their
devices in one mesh.

Call :func:`initialize` once, before any JAX computation, then :func:`check_agreement` before any
training. The rest of the library runs unchanged: every process computes the same host values
(splits, batches, initial states are functions of the seed) and
:mod:`unlearn_jax.training.sharding` moves only the rows of a process's own devices. Every
process saves and restores checkpoints (Orbax coordinates them); only :func:`is_writer` writes
results. Paths (data, cache, output) must name a filesystem that every process sees.
"""

import json
import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

COORDINATOR = "UNLEARN_JAX_COORDINATOR"
NUM_PROCESSES = "UNLEARN_JAX_NUM_PROCESSES"
PROCESS_ID = "UNLEARN_JAX_PROCESS_ID"
INIT_TIMEOUT = "UNLEARN_JAX_INIT_TIMEOUT"
ENV_VARS = (COORDINATOR, NUM_PROCESSES, PROCESS_ID, INIT_TIMEOUT)
DEFAULT_TIMEOUT_S = 300.0


def requested() -> bool:
  """Whether the environment asks for a multi-process run (any of :data:`ENV_VARS` is set)."""
  return any(os.environ.get(name) for name in ENV_VARS)


def _setting(value, name: str, parse):
  if value is not None:
    return value
  text = os.environ.get(name)
  if not text:
    return None
  try:
    return parse(text)
  except ValueError:
    raise ValueError(f"{name}: {text!r} is not a valid {parse.__name__}.") from None


def _wait_for_coordinator(coordinator: str, timeout_s: float, process_id: int) -> None:
  host, _, port = coordinator.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
        return
    except OSError:
      if time.monotonic() >= deadline:
        raise TimeoutError(
            f"distributed: no coordinator answered at {coordinator} within {timeout_s:g} s "
            f"(this is process {process_id}); start process 0 there, or fix --coordinator / "
            f"{COORDINATOR}.") from None
      time.sleep(0.2)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: float | None = None) -> None:
  """Joins this process to a multi-process run (``jax.distributed.initialize``).

  Arguments left ``None`` come from ``UNLEARN_JAX_COORDINATOR`` (``host:port`` of process 0),
  ``UNLEARN_JAX_NUM_PROCESSES``, ``UNLEARN_JAX_PROCESS_ID`` and ``UNLEARN_JAX_INIT_TIMEOUT``;
  whatever is still unset JAX detects from the cluster (Cloud TPU, SLURM, Open MPI). CPU
  processes exchange collectives over gloo.

  A process other than 0 given a coordinator waits up to ``timeout_s`` (default 300) for it to
  listen; then every process waits up to ``timeout_s`` for all to register (past that, JAX ends
  the process with ``DEADLINE_EXCEEDED``).

  Raises:
    ValueError: a malformed argument or variable (named).
    TimeoutError: no coordinator listened at ``coordinator`` within ``timeout_s``.
  """
  coordinator = _setting(coordinator, COORDINATOR, str)
  num_processes = _setting(num_processes, NUM_PROCESSES, int)
  process_id = _setting(process_id, PROCESS_ID, int)
  timeout_s = _setting(timeout_s, INIT_TIMEOUT, float)
  timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
  if coordinator is not None:
    host, sep, port = coordinator.rpartition(":")
    if not (sep and host and port.isdigit()):
      raise ValueError(f"coordinator: {coordinator!r} is not host:port (e.g. 10.0.0.1:1234).")
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes: {num_processes} is not a positive count.")
  if process_id is not None and process_id < 0:
    raise ValueError(f"process_id: {process_id} is negative.")
  if None not in (process_id, num_processes) and process_id >= num_processes:
    raise ValueError(f"process_id: {process_id} is not below num_processes ({num_processes}).")
  if timeout_s <= 0:
    raise ValueError(f"timeout_s: {timeout_s} is not a positive number of seconds.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator is not None and process_id not in (None, 0):
    _wait_for_coordinator(coordinator, timeout_s, process_id)
  jax.distributed.initialize(coordinator, num_processes, process_id,
                             initialization_timeout=max(1, round(timeout_s)))


def is_writer() -> bool:
  """Whether this process writes results, reports and logs (process 0; always in one process)."""
  return jax.process_index() == 0


def _flatten(tree, prefix: str = "") -> dict:
  """Nested dicts as {dotted path: leaf}."""
  if not isinstance(tree, dict) or not tree:
    return {prefix[:-1]: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}{key}."))
  return flat


def _allgather_text(text: str) -> list[str]:
  data = np.frombuffer(text.encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))[:, 0]
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  rows = multihost_utils.process_allgather(padded)
  return [bytes(row[:n]).decode() for row, n in zip(rows, sizes, strict=True)]


def check_agreement(fingerprint: dict) -> None:
  """Checks that every process passed the same JSON-serialisable ``fingerprint`` (e.g. the
  config and the seed). A collective: every process calls it, and all raise the same error.

  Raises:
    ValueError: names each process that differs from process 0 and its differing keys (dotted
      paths into nested dicts) with both values.
  """
  if jax.process_count() == 1:
    return
  texts = _allgather_text(json.dumps(fingerprint, sort_keys=True, default=str))
  reference = _flatten(json.loads(texts[0]))
  problems = []
  for p, text in enumerate(texts[1:], 1):
    theirs = _flatten(json.loads(text))
    differ = sorted(k for k in reference.keys() | theirs.keys()
                    if reference.get(k, "<missing>") != theirs.get(k, "<missing>"))
    if differ:
      problems.append(f"process {p} differs from process 0 on " + ", ".join(
          f"{k} ({theirs.get(k, '<missing>')!r} vs {reference.get(k, '<missing>')!r})"
          for k in differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else ""))
  if problems:
    raise ValueError("distributed: " + "; ".join(problems) + ". Every process must run the same "
                     "config and seed.")


__all__ = ["check_agreement", "initialize", "is_writer", "requested"]
