"""docs/extending.md's own files, exactly as written there: a new method and a new metric, each
in its own file, are picked up by ``unlearn-jax run`` with no other edit."""

import json
import pathlib
import re
import subprocess
import sys

DOC = pathlib.Path(__file__).parents[1] / "docs" / "extending.md"


def _files() -> dict[str, str]:
  """The doc's code blocks whose first line is ``# file: NAME``, by name."""
  blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", DOC.read_text(), flags=re.S)
  return {name: body for name, body in blocks}


def _command() -> list[str]:
  """The doc's ``unlearn-jax run …`` line, as arguments."""
  line = next(x for x in DOC.read_text().splitlines() if x.startswith("unlearn-jax run "))
  return line.split()[1:]


def test_the_tutorials_method_and_metric_run_from_their_own_files(tmp_path, data_dir):
  files = _files()
  assert {"my_methods.py", "my_metrics.py", "my_experiment.py"} <= set(files)
  for name, body in files.items():
    (tmp_path / name).write_text(body)
  quick = ["--config.original.epochs=4", "--config.hparams.spotter.epochs=2",
           "--config.hparams.spotter_contract.epochs=2", "--config.evaluation.pra.enabled=False",
           "--config.evaluation.recovery.enabled=False",
           "--config.evaluation.relearn.enabled=False",
           "--config.evaluation.inversion.enabled=False", "--config.progress=False",
           f"--config.data.data_dir={data_dir}", f"--config.cache_dir={tmp_path / 'cache'}",
           "--config.compilation_cache=False"]
  run = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-m", "unlearn_jax.cli",
                        *_command(), *quick], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "ResourceWarning" not in run.stderr, run.stderr[-3000:]  # nothing left unclosed
  results = json.loads((tmp_path / "runs" / "my_experiment" / "results.json").read_text())
  assert list(results["models"]) == ["original", "spotter", "spotter_contract"]
  assert results["config"]["hparams"]["spotter_contract"] == {"lambda3": 0.5, "epochs": 2}
  rows = (tmp_path / "runs" / "my_experiment" / "results.md").read_text()
  header = next(line for line in rows.splitlines() if line.startswith("| Method"))
  assert "| spotter_contract |" in rows and "| conf D_f |" in header
  conf = {m: r["metrics"]["conf/forget"] for m, r in results["models"].items()}
  assert 0 < conf["spotter_contract"] < conf["original"] <= 1, conf  # moving away from θ_o
  # The contraction term ran: the two methods' forget-set feature norms differ.
  norm = [results["models"][m]["metrics"]["norm/forget"] for m in ("spotter", "spotter_contract")]
  assert norm[0] != norm[1], norm
