"""``ruff check`` (the rules of pyproject.toml) is clean over the code of the repository."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATHS = ("unlearn_jax", "tests", "benchmarks", "experiments")


def test_ruff_check_is_clean():
  result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *PATHS], cwd=ROOT,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
