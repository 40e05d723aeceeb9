"""Relearning by fine-tuning on D_r alone: the fine-tuning curve against a naive loop, Retrain
staying put on real digits, seeding, and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unlearn_jax.data.batching import Stream
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import accuracy
from unlearn_jax.evaluation.relearning import COSINE_FLOOR, finetune_curve
from unlearn_jax.evaluation.retain_relearning import relearn_on_retain
from unlearn_jax.objectives.losses import cross_entropy


@pytest.fixture(scope="module")
def digits_retrain(digits_model, digits_class0):
  """Retrain on digits without class 0 (the original's recipe, seed 1)."""
  from unlearn_jax.optim import Recipe
  from unlearn_jax.training.classifier import train_classifier
  state, _ = train_classifier(digits_model, digits_class0.retain,
                              Recipe(epochs=15, batch_size=64), seed=1, progress=False)
  return jax.device_get(state.params), jax.device_get(state.model_state)


def _naive_curve(model, params, batches, eval_sets, *, learning_rate, eval_every):
  """Plain gradient descent with the cosine schedule written out, accuracies by NumPy."""
  steps = len(batches)

  def loss(p, batch):
    logits = model.apply(p, {}, jnp.asarray(batch["image"]))[1]
    per_example = cross_entropy(logits, jnp.asarray(batch["label"]))
    return jnp.sum(per_example * batch["mask"]) / jnp.sum(batch["mask"])

  forward, grad = jax.jit(lambda p, x: model.apply(p, {}, x)[1]), jax.jit(jax.grad(loss))

  def accuracies(p):
    return [100.0 * np.mean(np.asarray(forward(p, data.images)).argmax(1) == data.labels)
            for data in eval_sets]

  rows = [accuracies(params)]
  for t, batch in enumerate(batches):
    rate = learning_rate * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + np.cos(np.pi * t
                                                                                  / steps)))
    grads = grad(params, batch)
    params = jax.tree.map(lambda p, g, r=rate: p - r * g, params, grads)
    if (t + 1) % eval_every == 0:
      rows.append(accuracies(params))
  return np.asarray(rows)


def test_finetune_curve_matches_a_naive_gradient_descent(digits_model, digits_ga, digits_class0):
  stream = Stream(digits_class0.retain, 32, seed=0, name="test")
  sets = [digits_class0.forget, digits_class0.test_retain]
  kwargs = {"learning_rate": 0.5, "eval_every": 2}
  curve = finetune_curve(digits_model, *digits_ga, stream.batch, 6, sets,
                         key=jax.random.key(0), optimizer="sgd", schedule="cosine", **kwargs)
  naive = _naive_curve(digits_model, digits_ga[0], [stream.batch(t) for t in range(6)], sets,
                       **kwargs)
  assert curve.shape == (4, 2)
  assert curve[0, 0] == accuracy(digits_model, *digits_ga, digits_class0.forget)
  np.testing.assert_allclose(curve, naive, atol=1.5)  # ≤ 2 of 142 forget images
  assert not np.allclose(curve[0], curve[-1])  # the steps moved the model


def test_retrain_stays_put_and_the_run_is_seeded(digits_model, digits_retrain, digits_ga,
                                                 digits_class0):
  """10 epochs of D_r (the paper's protocol) leave Retrain's forget accuracy where it was."""
  retrain = relearn_on_retain(digits_model, *digits_retrain, digits_class0, seed=0)
  ga = relearn_on_retain(digits_model, *digits_ga, digits_class0, seed=0)
  print(f"\nD_r fine-tuning, D_f accuracy: Retrain {retrain['forget'][0]:.1f} → "
        f"{retrain['forget'][-1]:.1f}, GA {ga['forget'][0]:.1f} → {ga['forget'][-1]:.1f}")
  assert retrain["steps"] == list(range(0, 101, 10)) and len(retrain["forget"]) == 11
  for name in ("forget", "test_forget"):
    assert max(abs(a - retrain[name][0]) for a in retrain[name]) <= 3.0
  assert relearn_on_retain(digits_model, *digits_ga, digits_class0, seed=0) == ga


def test_random_forgetting_has_no_test_forget_curve(digits, digits_model, digits_ga):
  from unlearn_jax.data.splits import ForgetSpec, make_splits
  split = make_splits(digits, ForgetSpec(fraction=0.1), seed=0)
  result = relearn_on_retain(digits_model, *digits_ga, split, seed=0, steps=4, eval_every=2)
  assert result["test_forget"] is None and len(result["forget"]) == 3


def test_bad_inputs_name_the_field(digits_model, digits_original, digits_class0):
  def run(**kwargs):
    relearn_on_retain(digits_model, *digits_original, digits_class0, seed=0, **kwargs)

  with pytest.raises(ValueError, match="optimizer: 'rmsprop'"):
    run(optimizer="rmsprop")
  with pytest.raises(ValueError, match="schedule: 'step'"):
    run(schedule="step")
  with pytest.raises(ValueError, match="eval_every must divide steps"):
    run(steps=10, eval_every=3)
  with pytest.raises(ValueError, match="batch_size: 0"):
    run(batch_size=0)
  with pytest.raises(ValueError, match=r"config\.evaluation\.relearn_retain\.steps"):
    registry.resolve({"relearn_retain": {"steps": 0}})
  with pytest.raises(ValueError, match="eval_sets"):
    finetune_curve(digits_model, *digits_original, lambda _: None, 2, [],
                   key=jax.random.key(0))
