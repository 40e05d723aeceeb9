"""docs/embedding.md and the README's API section, every Python block as written, in order, in one
namespace (the README's block continues the embedding example): your own Linen model with Dropout
and your own loop, Spotter, Spotter + CE under jit and shard_map, the metrics and attacks,
U-LiRA on populations, an NNX model."""

import math
import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[1]


def _blocks(path: pathlib.Path, section: str | None = None) -> list[str]:
  """The ```python blocks of ``path`` (of its ``## section`` only, if given)."""
  text = path.read_text()
  if section is not None:
    text = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def walked():
  """The namespace after every block of docs/embedding.md, then the README's API block."""
  embedding = _blocks(ROOT / "docs" / "embedding.md")
  readme = _blocks(ROOT / "README.md", "Use it as a library, with your own model")
  assert len(embedding) == 6 and len(readme) == 1
  namespace = {"__name__": "embedding"}
  for i, block in enumerate(embedding):
    exec(compile(block, f"docs/embedding.md, block {i + 1}", "exec"), namespace)
  exec(compile(readme[0], "README.md, API block", "exec"), namespace)
  return namespace


@pytest.mark.floors
def test_your_model_is_unlearned_by_spotter(walked):
  before, after = walked["before"], walked["after"]
  assert before[0] > 90 and after[0] <= 10  # D_t^f: class 0 recognised, then forgotten
  assert after[1] >= before[1] - 3  # D_t^r kept


@pytest.mark.floors
def test_the_composed_objective_steps_under_jit_and_shard_map(walked):
  from unlearn_jax.evaluation.outputs import accuracy
  metrics = walked["metrics"]
  assert set(metrics) >= {"loss", "mkd/loss", "mkd_near/loss", "dispersion/loss", "ce/loss"}
  assert math.isfinite(float(metrics["loss"]))
  assert accuracy(walked["model"], *walked["composed"], walked["test_forget"]) <= 20


@pytest.mark.floors
def test_the_metrics_and_attacks_report_on_the_unlearned_model(walked):
  assert set(walked["ou"]) == {"OU/pgd", "OU/gaussian"}
  assert all(0 <= v <= math.log(2) for v in walked["ou"].values())
  assert walked["pra"]["strongest"] is not None  # the edit recovers class 0 within 1 point
  assert walked["pra"]["strongest"]["forget"] > walked["pra"]["base"]["forget"]
  assert set(walked["fm_hr"]) >= {"fm", "hr", "hr_labels", "head_swap"}
  assert 0 <= walked["cka"] <= 1


@pytest.mark.floors
def test_u_lira_attacks_the_population(walked):
  attack = walked["attack"]
  assert walked["phi"].shape == (8, len(walked["pool"]))
  assert 0 <= attack["u_lira"]["accuracy"]["mean"] <= 1
  assert attack["vulnerability"]["examples"] > 0


@pytest.mark.floors
def test_an_nnx_model_is_trained_and_unlearned(walked):
  from unlearn_jax.evaluation.outputs import accuracy
  model, unlearned = walked["nnx_model"], walked["nnx_unlearned"]
  assert accuracy(model, walked["nnx_params"], walked["nnx_state"], walked["test_retain"]) > 90
  assert accuracy(model, *unlearned, walked["test_forget"]) <= 10
  assert accuracy(model, *unlearned, walked["test_retain"]) > 80
  # EU-k with k = 1 re-initialised and trained the head only: the hidden layer is untouched.
  np.testing.assert_array_equal(walked["nnx_params"]["hidden"]["kernel"],
                                unlearned[0]["hidden"]["kernel"])
