"""Run by tests/test_multihost.py: one process of a multi-process run (or a lone process) that
trains the small CNN on digits for one epoch through the library, evaluates it and saves an Orbax
checkpoint. Process 0 writes the parameters to ``OUT/params.npz`` and prints a JSON line. The
caller sets the device count in XLA_FLAGS.

  multihost_check.py DATA_DIR OUT [COORDINATOR NUM_PROCESSES PROCESS_ID]
"""

import json
import pathlib
import sys

import jax
import numpy as np

from unlearn_jax import distributed
from unlearn_jax.checkpoint import Checkpointer
from unlearn_jax.data.datasets import load_dataset
from unlearn_jax.evaluation.outputs import accuracy
from unlearn_jax.models import make_model
from unlearn_jax.optim import Recipe
from unlearn_jax.training.classifier import train_classifier

RECIPE = Recipe(epochs=1, batch_size=64)


def flat_params(params) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}


def main(data_dir: str, out: str, coordinator: str | None = None, num_processes: str = "1",
         process_id: str = "0") -> None:
  if coordinator:
    distributed.initialize(coordinator, int(num_processes), int(process_id), timeout_s=60)
  data = load_dataset("digits", data_dir=data_dir)
  model = make_model("small_cnn", num_classes=data.num_classes, input_shape=data.image_shape,
                     mean=data.mean, std=data.std)
  state, history = train_classifier(model, data.train, RECIPE, seed=0, progress=False)
  test_accuracy = accuracy(model, state.params, state.model_state, data.test)
  out = pathlib.Path(out)
  with Checkpointer(out / "ckpt") as ckpt:
    ckpt.save(int(jax.device_get(state.step)), state, {"kind": "multihost_check"})
    ckpt.wait()
  if distributed.is_writer():
    np.savez(out / "params.npz", **flat_params(jax.device_get(state.params)))
    print(json.dumps({"processes": jax.process_count(), "devices": len(jax.devices()),
                      "steps": int(jax.device_get(state.step)), "loss": history[-1]["loss"],
                      "test_accuracy": test_accuracy}))


if __name__ == "__main__":
  main(*sys.argv[1:])
