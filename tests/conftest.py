"""Test set-up: two CPU devices (as the CLI's default on this 2-core machine), deterministic GPU
kernels (as the CLI's default), rank promotion raises, and session fixtures for the real digits
data and a trained original model."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2"
                           + " --xla_gpu_deterministic_ops=true").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# Scripts that tests run in processes of their own (their import sets XLA flags of their own),
# and a metric module whose import registers it: --doctest-modules would import them here.
collect_ignore_glob = ["*_check.py", "retain_norm_metric.py"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def digits(data_dir):
  from unlearn_jax.data.datasets import load_dataset
  return load_dataset("digits", data_dir=data_dir)


@pytest.fixture(scope="session")
def digits_model(digits):
  from unlearn_jax.models import make_model
  return make_model("small_cnn", num_classes=digits.num_classes, input_shape=digits.image_shape,
                    mean=digits.mean, std=digits.std)


@pytest.fixture(scope="session")
def digits_original(digits, digits_model):
  """A small CNN trained on all of digits (≈98% test accuracy): (params, model_state)."""
  from unlearn_jax.optim import Recipe
  from unlearn_jax.training.classifier import train_classifier
  state, _ = train_classifier(digits_model, digits.train, Recipe(epochs=15, batch_size=64),
                              seed=0, progress=False)
  return jax.device_get(state.params), jax.device_get(state.model_state)


@pytest.fixture(scope="session")
def digits_class0(digits):
  """Splits of digits with class 0 forgotten (seed 0)."""
  from unlearn_jax.data.splits import ForgetSpec, make_splits
  return make_splits(digits, ForgetSpec(classes=(0,)), seed=0)


@pytest.fixture(scope="session")
def digits_ga(digits_model, digits_original, digits_class0):
  """The original unlearned by the library's gradient ascent (until Acc(D_f) ≤ 5%)."""
  from unlearn_jax.methods import Original
  from unlearn_jax.unlearning import unlearn
  result = unlearn("ga", Original(digits_model, *digits_original), digits_class0, seed=0,
                   progress=False)
  return result.params, result.model_state
