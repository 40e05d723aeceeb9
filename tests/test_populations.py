"""Populations: vmapped = one at a time, sharded over 8 devices = unsharded, padding, kill and
resume, balanced masks, memory, and the bad inputs of every kind of population."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from unlearn_jax import populations, seeding
from unlearn_jax.data.memberships import balanced_masks
from unlearn_jax.methods import Original, get_method
from unlearn_jax.models import make_model
from unlearn_jax.optim import Recipe
from unlearn_jax.training.classifier import train_classifier
from unlearn_jax.training.execute import check_population, execute_plan

SHORT = Recipe(epochs=2, batch_size=64)


def _max_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _member(tree, k):
  return jax.tree.map(lambda x: x[k], tree)


@pytest.fixture(scope="module")
def mlp(digits):
  return make_model("mlp", num_classes=10, input_shape=digits.image_shape, mean=digits.mean,
                    std=digits.std)


@pytest.fixture(scope="module")
def design(digits):
  """Balanced halves of the digits pool for 4 models; T = 100 random pool examples."""
  target = np.zeros(len(digits.train), bool)
  target[seeding.host_rng(0, "t").choice(len(target), 100, replace=False)] = True
  masks = balanced_masks(4, len(target), seed=0, strata=target.astype(int))
  return masks, masks & target, masks & ~target


@pytest.fixture(scope="module")
def originals(digits, mlp, design):
  """Three originals on their halves (K = 3 on 2 devices: padded to 4)."""
  return populations.train_population(mlp, digits.train, SHORT, seeds=(11, 12, 13),
                                      masks=design[0][:3], progress=False)


def test_balanced_masks_balance_every_example_and_every_model():
  strata = np.repeat([0, 1], [37, 64])
  masks = balanced_masks(8, 101, seed=3, strata=strata)
  assert (masks.sum(axis=0) == 4).all()  # every example IN for exactly M/2 models
  assert set(masks[:, strata == 1].sum(axis=1)) == {32}
  assert set(masks[:, strata == 0].sum(axis=1)) <= {18, 19}
  np.testing.assert_array_equal(masks, balanced_masks(8, 101, seed=3, strata=strata))
  assert (masks != balanced_masks(8, 101, seed=4, strata=strata)).any()
  with pytest.raises(ValueError, match="even"):
    balanced_masks(7, 10, seed=0)


def test_vmapped_population_equals_models_trained_one_at_a_time(digits, mlp, design, originals):
  masks, forgot, retain = design
  assert originals.info["padded_models"] == 1 and len(originals) == 3
  for k in (0, 2):
    alone, _ = train_classifier(mlp, digits.train.subset(np.flatnonzero(masks[k])), SHORT,
                                seed=originals.seeds[k], progress=False)
    assert _max_diff(_member(originals.params, k), alone.params) < 1e-5
  assert _max_diff(_member(originals.params, 0), _member(originals.params, 1)) > 1e-2
  # Unlearning from each model's own original on its own forget set: SalUn (a saliency mask in
  # the optimiser state, two phases per epoch) equals its plan run alone.
  method = get_method("salun")
  hp = method.hparams("small", {"epochs": 1})
  unlearned = populations.unlearn_population(method, originals, digits.train,
                                             forget_masks=forgot[:3], retain_masks=retain[:3],
                                             seeds=(5, 6, 7), hparams=hp, progress=False)
  for k in (0, 2):
    seed = unlearned.seeds[k]
    plan = populations.unlearning_plan(method, hp, originals.member(k), digits.train,
                                       forgot[k], retain[k], forget_classes=(), seed=seed)
    alone, _ = execute_plan(plan, key=seeding.device_key(seed, "salun", "steps"), progress=False)
    assert _max_diff(_member(unlearned.params, k), alone.params) < 1e-5


def test_eight_devices_sharded_model_axis_equals_one_device(data_dir):
  script = pathlib.Path(__file__).with_name("population_multidevice_check.py")
  out = subprocess.run([sys.executable, str(script), data_dir], capture_output=True, text=True,
                       check=True, timeout=600)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8 and result["distinct"] > 1e-2
  assert result["padded_models"] == 2  # K = 6 on 8 devices: padded, not an error
  assert result["sharded"] < 1e-4 and result["padded"] < 1e-4, result


class Killed(Exception):
  pass


def test_killed_population_resumes_without_retraining_finished_chunks(digits, mlp, design,
                                                                     tmp_path, monkeypatch):
  masks = design[0]
  kwargs = {"seeds": (1, 2, 3, 4), "masks": masks, "chunk_size": 2, "progress": False,
            "checkpoint_dir": tmp_path / "pop", "run_key": "k"}
  full = populations.train_population(mlp, digits.train, SHORT, **{**kwargs,
                                                                   "checkpoint_dir": None})
  real, calls = populations.execute_population, []

  def dies_on_second_chunk(plans, **kw):
    calls.append(len(plans))
    if len(calls) == 2:
      raise Killed
    return real(plans, **kw)

  monkeypatch.setattr(populations, "execute_population", dies_on_second_chunk)
  with pytest.raises(Killed):
    populations.train_population(mlp, digits.train, SHORT, **kwargs)
  calls.clear()
  resumed = populations.train_population(mlp, digits.train, SHORT, **kwargs)
  assert calls == [2]  # only the unfinished chunk ran again
  assert resumed.info["restored_chunks"] == 1
  assert _max_diff(resumed.params, full.params) == 0.0
  with pytest.raises(ValueError, match="holds run"):
    populations.train_population(mlp, digits.train, SHORT, **{**kwargs, "run_key": "other"})


def _fresh(model):
  return Original(model, *model.init(jax.random.key(0)))


def test_population_too_large_says_which_chunk_fits(digits, mlp, design):
  ft = get_method("ft")
  plan = populations.unlearning_plan(ft, ft.hparams("small"), _fresh(mlp), digits.train,
                                     design[1][0], design[2][0], forget_classes=(), seed=0)
  per_model = populations.model_bytes(plan)
  params = sum(x.size * 4 for x in jax.tree.leaves(plan.params))
  # Adam state 3P, gradient and update 2P, a batch; no θ_o (FT's terms read no teacher).
  assert 5 * params < per_model < 6 * params
  with pytest.raises(ValueError, match="chunk_size ≤ 2 fits"):
    populations.chunk_models(8, 2, per_model, 3 * per_model, chunk_size=4)
  with pytest.raises(ValueError, match="one per device"):
    populations.train_population(mlp, digits.train, SHORT, seeds=(1, 2), progress=False,
                                 memory_budget=per_model)
  assert populations.chunk_models(8, 2, per_model, 5 * per_model) == 4
  assert populations.chunk_models(3, 2, per_model, 100 * per_model) == 4


def test_bad_inputs_of_unlearning_populations(digits, mlp, design, originals):
  masks, forgot, retain = design
  outside = forgot[:3].copy()
  outside[1, np.flatnonzero(~masks[1])[0]] = True
  with pytest.raises(ValueError, match="model 1 would unlearn or keep pool example"):
    populations.unlearn_population("ft", originals, digits.train, forget_masks=outside,
                                   retain_masks=retain[:3], seeds=(1, 2, 3), progress=False)
  with pytest.raises(ValueError, match=r"stop_forget_accuracy=None \(now 5.0\)"):
    populations.unlearn_population("ga", originals, digits.train, forget_masks=forgot[:3],
                                   retain_masks=retain[:3], seeds=(1, 2, 3), progress=False)
  with pytest.raises(ValueError, match=r"skip rule.*stop_forget_accuracy=None \(now 5.0\)"):
    populations.unlearn_population("scrub", originals, digits.train, forget_masks=forgot[:3],
                                   retain_masks=retain[:3], seeds=(1, 2, 3), progress=False,
                                   profile="fashion_mnist")
  with pytest.raises(ValueError, match="in both"):
    populations.unlearn_population("ft", originals, digits.train, forget_masks=forgot[:3],
                                   retain_masks=forgot[:3], seeds=(1, 2, 3), progress=False)
  uneven = retain[:3].copy()
  uneven[0, np.flatnonzero(uneven[0])[:300]] = False  # model 0 keeps far fewer examples
  with pytest.raises(ValueError, match="same steps"):
    populations.unlearn_population("ft", originals, digits.train, forget_masks=forgot[:3],
                                   retain_masks=uneven, seeds=(1, 2, 3), progress=False)
  with pytest.raises(ValueError, match="class unlearning only"):
    populations.unlearn_population("spotter", originals, digits.train, forget_masks=forgot[:3],
                                   retain_masks=retain[:3], seeds=(1, 2, 3), progress=False)
  with pytest.raises(ValueError, match=r"expected \(3, 1437\)"):
    populations.unlearn_population("ft", originals, digits.train, forget_masks=forgot,
                                   retain_masks=retain, seeds=(1, 2, 3), progress=False)


def test_population_logits_match_each_model(digits, mlp, originals):
  from unlearn_jax.evaluation.outputs import model_outputs
  logits = populations.population_logits(originals, digits.test, batch_size=100,
                                         models_per_call=2)
  assert logits.shape == (3, len(digits.test), 10)
  for k in range(3):
    own = model_outputs(mlp, *jax.tree.map(lambda x, k=k: x[k], (originals.params,
                                                                 originals.model_state)),
                        digits.test)[1]
    np.testing.assert_allclose(logits[k], own, atol=1e-4)


@pytest.mark.slow
def test_every_registered_method_builds_population_plans_of_one_structure(digits, mlp):
  """No per-method code: every method's plans for two models with their own halves (class 0
  forgotten, so class-only methods build) run the same steps; early stops are switched off by
  the switch that ``stop_hint`` names."""
  from unlearn_jax.methods import METHODS
  classes = digits.train.labels == 0
  masks = balanced_masks(2, len(classes), seed=1, strata=classes.astype(int))
  original = _fresh(mlp)
  for name, method in sorted(METHODS.items()):
    hp = method.hparams("small")
    hint = populations.stop_hint(method, hp)
    stops = [k for k in hp if "stop" in k and hp[k] is not None]
    assert bool(stops) == ("stop_forget_accuracy=None" in hint), name
    hp = method.hparams("small", {k: None for k in stops})
    plans = [populations.unlearning_plan(method, hp, original, digits.train,
                                         masks[k] & classes, masks[k] & ~classes,
                                         forget_classes=(0,), seed=k) for k in range(2)]
    check_population(plans, name)


def test_a_method_with_finalize_runs_as_a_population(digits, mlp, originals, design):
  """Boundary Expanding trains a widened head and prunes it per model afterwards."""
  masks, forgot, retain = design
  method = get_method("boundary_expanding")
  hp = method.hparams("small", {"epochs": 1})
  unlearned = populations.unlearn_population(method, originals, digits.train,
                                             forget_masks=forgot[:3], retain_masks=retain[:3],
                                             seeds=(1, 2, 3), hparams=hp, progress=False)
  assert unlearned.params["head"]["kernel"].shape[-1] == 10
  plan = populations.unlearning_plan(method, hp, originals.member(1), digits.train,
                                     forgot[1], retain[1], forget_classes=(), seed=2)
  alone, _ = execute_plan(plan, key=seeding.device_key(2, method.name, "steps"), progress=False)
  params, _ = plan.finalize(alone.params, alone.model_state)
  assert _max_diff(_member(unlearned.params, 1), params) < 1e-5
