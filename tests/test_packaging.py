"""The package as others install it: ranges with tested floors, the recorded set, every subpackage
and config in the wheel, the shipped digits config run from an empty directory, and good manners
(no heavy import, no global matplotlib backend switch)."""

import json
import pathlib
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(path: pathlib.Path) -> dict[str, Version]:
  lines = [x.strip() for x in path.read_text().splitlines()]
  pins = [x.split("==") for x in lines if x and not x.startswith("#")]
  return {canonicalize_name(name): Version(version) for name, version in pins}


def _dependencies() -> list[Requirement]:
  return [Requirement(r) for r in PROJECT["project"]["dependencies"]]


@pytest.mark.floors
def test_every_dependency_is_a_range_whose_floor_ci_installs():
  floors = _pins(ROOT / ".ci" / "floors.txt")
  lower = {}
  for req in _dependencies():
    ops = {s.operator: Version(s.version) for s in req.specifier}
    assert ">=" in ops and "==" not in ops, f"{req}: a range with a tested lower bound"
    lower[canonicalize_name(req.name)] = ops[">="]
  assert floors == lower  # .ci/floors.txt pins exactly the lower bounds


@pytest.mark.floors
def test_the_recorded_set_satisfies_every_range():
  recorded = _pins(ROOT / "constraints.txt")
  for req in _dependencies():
    assert req.specifier.contains(recorded[canonicalize_name(req.name)]), req


@pytest.mark.floors
def test_the_wheel_holds_every_subpackage_the_configs_and_py_typed():
  package = ROOT / "unlearn_jax"
  found = {".".join(("unlearn_jax", *p.parent.relative_to(package).parts))
           for p in package.rglob("*.py") if "__pycache__" not in p.parts}
  setup = PROJECT["tool"]["setuptools"]
  assert set(setup["packages"]) == found | {"unlearn_jax.experiments"}
  assert setup["package-dir"] == {"unlearn_jax.experiments": "experiments"}
  assert (package / "py.typed").exists() and setup["package-data"]["unlearn_jax"] == ["py.typed"]


@pytest.mark.floors
def test_importing_a_method_loads_neither_tfds_nor_matplotlib():
  code = ("import sys, unlearn_jax.methods.spotter, unlearn_jax.evaluation.suite; "
          "print(sorted(m for m in ('tensorflow_datasets', 'matplotlib') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=ROOT.parent)
  assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


@pytest.fixture(scope="module")
def installed_run(tmp_path_factory, data_dir):
  """``unlearn-jax run digits`` (reduced) by the installed script, in an empty directory, under
  ``-W error::ResourceWarning``: (the run's folder, the process)."""
  empty = tmp_path_factory.mktemp("empty")
  script = pathlib.Path(sys.executable).parent / "unlearn-jax"
  quick = ["--config.original.epochs=2", "--config.methods=('ft',)", "--config.retrain_seeds=()",
           "--config.hparams.ft.epochs=1", "--config.evaluation.representation=False",
           "--config.evaluation.inversion.enabled=False",
           "--config.evaluation.relearn.enabled=False", "--config.evaluation.pra.shots=(1,)",
           *(f"--config.evaluation.{m}.enabled=False"
             for m in ("tow", "relearn_retain", "weight_space", "uia")),
           "--config.evaluation.pra.num_draws=1", f"--config.data.data_dir={data_dir}",
           "--config.compilation_cache=False", "--config.progress=False"]
  out = subprocess.run([sys.executable, "-W", "error::ResourceWarning", str(script), "run",
                        "digits", *quick], cwd=empty, capture_output=True, text=True, timeout=900)
  return empty / "runs" / "digits", out


@pytest.mark.floors
def test_the_installed_script_runs_a_shipped_config_from_an_empty_directory(installed_run):
  run, out = installed_run
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ResourceWarning" not in out.stderr, out.stderr[-3000:]
  assert "| ft |" in out.stdout and "unlearn-jax: wrote " in out.stderr  # table out, note err
  results = json.loads((run / "results.json").read_text())
  assert list(results["models"]) == ["original", "ft"]
  assert (run / "recovery.png").exists()


@pytest.mark.floors
def test_the_report_leaves_the_callers_matplotlib_backend_alone(installed_run):
  run, _ = installed_run
  code = ("import sys, matplotlib; matplotlib.use('svg'); from unlearn_jax import report; "
          f"report.report_from_dir({str(run)!r}); "
          "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
  (run / "recovery.png").unlink()
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.split() == ["svg", "False"], out.stderr[-2000:]
  assert (run / "recovery.png").exists()  # drawn again, without pyplot
