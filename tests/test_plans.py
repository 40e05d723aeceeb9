"""Plans: names are checked when a plan is built (naming both sides), and the executor derives
streams, teacher outputs, the frozen context and the schedule from what the terms read."""

import jax
import numpy as np
import pytest

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import make_model
from unlearn_jax.objectives import terms as T
from unlearn_jax.optim import make_optimizer
from unlearn_jax.training.execute import prepare
from unlearn_jax.training.plan import Block, Data, Plan


@pytest.fixture(scope="module")
def parts():
  model = make_model("mlp", num_classes=3, input_shape=(4, 4, 1), mean=(0.5,), std=(0.25,))
  params, state = model.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  examples = ArrayDataset(rng.uniform(size=(10, 4, 4, 1)).astype(np.float32),
                          rng.integers(0, 3, 10).astype(np.int32))
  return model, params, state, make_optimizer("sgd", learning_rate=0.1), examples


def _plan(parts, blocks, weights, *, data=None, **kw):
  model, params, state, tx, examples = parts
  data = data if data is not None else {"forget": Data(examples, 4), "retain": Data(examples, 3)}
  return Plan(model, params, state, tx, data, blocks, weights, 0, **kw)


@pytest.mark.parametrize("blocks, weights, kw, message", [
    ([Block("b", {"ce": T.cross_entropy("perturbed")})], {"ce": 1.0}, {},
     r"block 'b': term 'ce' reads data 'perturbed', which the plan does not provide \(its data: "
     r"\['forget', 'retain'\]\)"),
    ([Block("b", {"kd": T.distillation("forget")})], {"kd": 1.0}, {},
     r"block 'b': term 'kd' reads teacher 'original', which the plan does not pass \(its "
     r"teachers: \[\]\)"),
    ([Block("b", {"ce": T.cross_entropy("retain")})], {}, {}, r"term 'ce' has no weight"),
    ([Block("b", {"ce": T.cross_entropy("retain")})], {"ce": 1.0, "kd": 1.0}, {},
     r"weights: \['kd'\] belong to no term"),
    ([Block("b", {"ce": T.cross_entropy("retain")})], {"ce": -1.0}, {},
     r"weights.ce: -1.0 is not allowed"),
    ([Block("b", {"ce": T.cross_entropy("retain")})], {"ce": float("nan")}, {},
     r"weights.ce: nan is not allowed"),
    ([Block("b", {"ce": T.cross_entropy("retain"), "neg": T.negated_cross_entropy("forget")})],
     {"ce": 1.0, "neg": 1.0}, {}, r"block 'b': its terms read \['forget', 'retain'\]; name the "
                                  r"driver"),
    ([Block("b", {"ce": T.cross_entropy("retain")}), Block("b", {"ce": T.cross_entropy("forget")})],
     {"ce": 1.0}, {}, r"block 'b': two blocks of this name have different terms"),
    ([Block("b", {"ce": T.cross_entropy("retain")}, epochs=-1)], {"ce": 1.0}, {},
     r"block 'b'.epochs: -1; must be an integer ≥ 0"),
    ([Block("b", {"ce": T.cross_entropy("retain")}, driver="test")], {"ce": 1.0}, {},
     r"block 'b': driver 'test' is not a data set of the plan"),
])
def test_names_that_do_not_match_fail_when_the_plan_is_built(parts, blocks, weights, kw, message):
  with pytest.raises(ValueError, match=message):
    _plan(parts, blocks, weights, **kw)


def test_extras_of_the_wrong_length_and_empty_data(parts):
  examples = parts[-1]
  with pytest.raises(ValueError, match=r"data\['forget'\].extras\['u'\]: 3 rows for 10 examples"):
    _plan(parts, [], {}, data={"forget": Data(examples, 4, extras={"u": np.zeros(3)})})
  with pytest.raises(ValueError, match=r"data\['forget'\].batch_size: 0; must be an integer ≥ 1"):
    _plan(parts, [], {}, data={"forget": Data(examples, 0)})


def test_teachers_are_precomputed_and_left_out_of_frozen(parts):
  """A teacher read on a plain data set becomes batch extras (its outputs, computed once) and
  stays out of ``frozen``; one read on an augmented set stays in ``frozen``; a teacher no term
  reads travels nowhere."""
  model, params, state, _, examples = parts
  teacher = (params, state)
  kd = Block("kd", {"kd": T.distillation("forget", masked=True)})
  plan = _plan(parts, [kd], {"kd": 1.0}, teachers={"original": teacher, "unused": teacher},
               forget_mask=np.array([True, False, False]))
  prepared = prepare(plan)
  assert set(prepared.frozen) == {"weights", "forget_mask"}
  batch = prepared.batch(kd, 0, 0, 1)
  assert set(batch) == {"forget", "progress"}  # retain is not read: not batched
  expected = model.apply(params, state, batch["forget"]["image"])[1]
  np.testing.assert_allclose(batch["forget"]["original/logits"], expected, rtol=1e-5, atol=1e-6)
  augmented = _plan(parts, [kd], {"kd": 1.0}, teachers={"original": teacher},
                    data={"forget": Data(examples, 4, augment=True)},
                    forget_mask=np.array([True, False, False]))
  prepared = prepare(augmented)
  assert set(prepared.frozen["teachers"]) == {"original"}
  assert "original/logits" not in prepared.batch(kd, 0, 0, 1)["forget"]


def test_a_data_sets_epochs_continue_across_blocks(parts):
  """Positions count the steps run with each driver: RL-style alternation gives forget epochs
  0, 1 and retain epochs 0, 1, and a zipped set sees the driver's positions."""
  forget = Block("f", {"rl": T.random_label_cross_entropy("forget")})
  retain = Block("r", {"ce": T.cross_entropy("retain")})
  plan = _plan(parts, [forget, retain] * 2, {"rl": 1.0, "ce": 1.0})
  assert [(b.name, p, n) for b, p, n in prepare(plan).schedule] == [
      ("f", 0, 3), ("r", 0, 4), ("f", 3, 3), ("r", 4, 4)]
  assert plan.num_steps == 14
  both = Block("both", {"ce": T.cross_entropy("retain"), "neg": T.negated_cross_entropy("forget")},
               steps=5, driver="forget")
  prepared = prepare(_plan(parts, [both], {"ce": 1.0, "neg": 1.0}))
  batch = prepared.batch(both, 4, 4, 5)
  np.testing.assert_array_equal(batch["retain"]["image"], prepared.streams["retain"].batch(4)[
      "image"])
  assert batch["progress"] == np.float32(4 / 5)
