"""Unlearning inversion: label scores against naive loops, the forgotten label of a GA-unlearned
digits model, nothing read from an unchanged model, the reconstruction, and bad inputs."""

import jax
import numpy as np
import pytest

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.evaluation.unlearning_inversion import (
  bias_scores,
  infer_labels,
  label_accuracy,
  probe_scores,
  probing_samples,
)


@pytest.fixture(scope="module")
def probes(digits_model, digits_original):
  return probing_samples(digits_model, *digits_original, key=jax.random.key(0), per_class=4,
                         steps=40)


def test_probes_are_classified_as_their_class(digits_model, digits_original, probes):
  assert len(probes) == 40 and np.all(np.bincount(probes.labels) == 4)
  assert probes.pixel_range()[0] >= 0.0 and probes.pixel_range()[1] <= 1.0
  predicted = model_outputs(digits_model, *digits_original, probes)[1].argmax(1)
  assert np.mean(predicted == probes.labels) >= 0.9


def test_probe_scores_match_a_loop(digits_model, digits_original, digits_ga, probes):
  scores = probe_scores(digits_model, digits_original, digits_ga, probes)
  drops = {c: [] for c in range(10)}
  for image, label in zip(probes.images, probes.labels, strict=True):
    one = ArrayDataset(image[None], np.array([label]))
    p = [np.exp(m - m.max()) / np.exp(m - m.max()).sum()
         for m in (model_outputs(digits_model, *model, one)[1][0].astype(np.float64)
                   for model in (digits_ga, digits_original))]
    drops[int(label)].append(p[0][label] - p[1][label])
  np.testing.assert_allclose(scores, [np.mean(drops[c]) for c in range(10)], atol=1e-6)


def test_ga_leaks_its_forgotten_label_and_an_unchanged_model_nothing(
    digits_model, digits_original, digits_ga, probes):
  by_probes = infer_labels(probe_scores(digits_model, digits_original, digits_ga, probes), 1)
  by_bias = infer_labels(bias_scores(digits_ga[0], digits_original[0]), 1)
  assert by_probes == (0,) and by_bias == (0,)
  assert label_accuracy(by_probes, (0,)) == 1.0 and label_accuracy((3,), (0,)) == 0.0
  assert infer_labels(probe_scores(digits_model, digits_original, digits_original, probes),
                      1) is None
  assert infer_labels(bias_scores(*[digits_original[0]] * 2), 1) is None
  assert label_accuracy(None, (0,)) is None


def test_infer_labels_matches_sorting():
  rng = np.random.default_rng(0)
  for _ in range(20):
    scores = rng.normal(size=10)
    assert infer_labels(scores, 2) == tuple(int(c) for c in sorted(range(10),
                                                                  key=lambda c: scores[c])[:2])


def test_bad_inputs_name_the_field(digits_model, digits_original):
  with pytest.raises(ValueError, match="k: 0"):
    infer_labels(np.arange(3.0), 0)
  with pytest.raises(ValueError, match="per_class, steps, learning_rate: 0"):
    probing_samples(digits_model, *digits_original, key=jax.random.key(0), per_class=0)
  with pytest.raises(ValueError, match=r"config\.evaluation\.uia\.invert: \['gaa'\]"):
    registry.resolve({"uia": {"invert": ("gaa",)}})
  with pytest.raises(ValueError, match=r"config\.evaluation\.uia\.probes_per_class"):
    registry.resolve({"uia": {"probe_steps": 0}})
