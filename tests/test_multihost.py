"""Multi-process runs on loopback (JAX's runtime, gloo collectives): two processes of two CPU
devices train, evaluate and checkpoint like one process of four; their checkpoint restores in one
process; processes given different seeds stop before training; a missing coordinator times out
with a clear error."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from multihost_check import RECIPE, flat_params

from unlearn_jax import distributed
from unlearn_jax.checkpoint import Checkpointer
from unlearn_jax.training.state import create_train_state

ROOT = pathlib.Path(__file__).parents[1]
SCRIPT = pathlib.Path(__file__).with_name("multihost_check.py")
CLI = [sys.executable, "-m", "unlearn_jax.cli"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
  # CPU devices with gloo collectives, also on a GPU machine (two processes cannot share a GPU).
  return env | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                "JAX_PLATFORMS": "cpu"}


def _run_all(jobs: list[tuple[list[str], dict]], timeout_s: float) -> list[tuple[int, str, str]]:
  """Runs the commands at once; returns (code, stdout, stderr) each, killing all on failure."""
  procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT) for cmd, env in jobs]
  deadline = time.monotonic() + timeout_s
  try:
    outs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def _last_json(stdout: str) -> dict:
  return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def test_two_processes_equal_one_process_and_restore_in_one(tmp_path, data_dir, digits,
                                                            digits_model):
  coordinator = f"127.0.0.1:{_free_port()}"
  two = [([sys.executable, str(SCRIPT), data_dir, str(tmp_path / "two"), coordinator, "2",
           str(i)], _env(2)) for i in range(2)]
  one = ([sys.executable, str(SCRIPT), data_dir, str(tmp_path / "one")], _env(4))
  runs = _run_all([*two, one], timeout_s=150)
  for code, _, err in runs:
    assert code == 0, err[-3000:]
  multi, single = _last_json(runs[0][1]), _last_json(runs[2][1])
  assert (multi["processes"], multi["devices"], single["processes"], single["devices"]) == (
      2, 4, 1, 4)
  assert multi["steps"] == single["steps"] == 23
  assert multi["test_accuracy"] == single["test_accuracy"] > 50.0
  np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-5)
  multi_params = dict(np.load(tmp_path / "two" / "params.npz"))
  single_params = dict(np.load(tmp_path / "one" / "params.npz"))
  for k, value in single_params.items():
    np.testing.assert_allclose(multi_params[k], value, atol=1e-5, rtol=0)

  # This process has two devices: a target of bare shapes restores replicated onto them.
  abstract = jax.eval_shape(lambda: create_train_state(
      *digits_model.init(jax.random.key(0)), RECIPE.make_tx(len(digits.train))))
  with Checkpointer(tmp_path / "two" / "ckpt") as ckpt:
    restored = ckpt.restore(abstract)
  assert int(restored.step) == 23
  restored_params = flat_params(restored.params)
  assert restored_params.keys() == multi_params.keys()
  for k, value in multi_params.items():
    np.testing.assert_array_equal(restored_params[k], value)


def test_processes_with_different_seeds_stop_before_training(tmp_path, data_dir, digits):
  coordinator = f"127.0.0.1:{_free_port()}"
  jobs = [([*CLI, "train-original", "digits:quick", "--coordinator", coordinator,
            "--num-processes", "2", "--process-id", str(i), "--init-timeout", "60",
            f"--config.seed={i}", f"--config.cache_dir={tmp_path / 'cache'}",
            f"--config.output_dir={tmp_path / 'out'}", f"--config.data.data_dir={data_dir}",
            "--config.progress=False"], _env(1)) for i in range(2)]
  for code, _, err in _run_all(jobs, timeout_s=90):
    assert code == 2, err[-3000:]
    assert ("distributed: process 1 differs from process 0 on config.seed (1 vs 0), seed (1 vs 0)"
            in err), err[-3000:]
  # Nothing trained or saved: at most the (empty) compilation cache directory exists.
  assert [p.name for p in (tmp_path / "cache").glob("*")] in ([], ["xla"])


def test_missing_coordinator_times_out_with_a_clear_error():
  coordinator = f"127.0.0.1:{_free_port()}"  # nobody listens there
  start = time.monotonic()
  [(code, _, err)] = _run_all([([*CLI, "train-original", "digits", "--coordinator", coordinator,
                                 "--num-processes", "2", "--process-id", "1",
                                 "--init-timeout", "2"], _env(1))], timeout_s=60)
  assert code == 2, err[-3000:]
  assert f"no coordinator answered at {coordinator} within 2 s" in err
  assert time.monotonic() - start < 60


@pytest.mark.parametrize("kwargs, env, message", [
    ({"coordinator": "localhost"}, {}, "coordinator: 'localhost' is not host:port"),
    ({"num_processes": 2, "process_id": 2}, {}, "process_id: 2 is not below num_processes"),
    ({}, {distributed.NUM_PROCESSES: "two"}, "UNLEARN_JAX_NUM_PROCESSES: 'two' is not a valid int"),
])
def test_bad_settings_are_named_before_joining(monkeypatch, kwargs, env, message):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=message):
    distributed.initialize(**kwargs)


def test_one_process_always_agrees_and_writes():
  distributed.check_agreement({"seed": 0})
  assert distributed.is_writer()
