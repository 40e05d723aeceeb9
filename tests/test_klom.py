"""KLOM (docs/math.md §7.7) against a per-example loop of the published binned KL, its
properties (zero on identical populations, a noise floor that falls with N, the cap of a
population no Retrain model reaches) and its bad inputs."""

import numpy as np
import pytest
from scipy import stats

from unlearn_jax.evaluation import klom


def published_klom(unlearned, retrained, *, closed_last_bin=True, bins=20, eps=1e-5,
                   clip=100.0):
  """RoyRin/data-unlearning-bench's ``kl_from_margins`` / ``compute_binned_KL_div``, example by
  example and bin by bin; ``closed_last_bin=False`` is the published np.digitize rule (a value
  on the top edge falls outside every bin)."""
  out = []
  for n in range(unlearned.shape[1]):
    p_arr = np.clip(unlearned[:, n], -clip, clip)
    q_arr = np.clip(retrained[:, n], -clip, clip)
    start, end = min(p_arr.min(), q_arr.min()), max(p_arr.max(), q_arr.max())
    if start >= end:
      end = start + 1
    edges = np.linspace(start, end, bins + 1)
    p_index, q_index = np.digitize(p_arr, edges), np.digitize(q_arr, edges)
    if closed_last_bin:
      p_index, q_index = np.minimum(p_index, bins), np.minimum(q_index, bins)
    p_counts = np.array([np.sum(p_index == i) for i in range(1, bins + 1)])
    q_counts = np.array([np.sum(q_index == i) for i in range(1, bins + 1)])
    p = p_counts / p_counts.sum() if p_counts.sum() > 0 else np.zeros(bins)
    q = q_counts / q_counts.sum() if q_counts.sum() > 0 else np.zeros(bins)
    q_safe = np.where(p > 0, np.maximum(q, eps), q)
    out.append(stats.entropy(pk=p, qk=q_safe) if p.sum() > 0 else 0.0)
  return np.asarray(out)


def _margins(rng, models, examples):
  """Margins of several shapes: spread, narrow, shifted, tied, beyond the ±100 clip."""
  u = rng.normal(0, 3, (models, examples))
  r = rng.normal(0.5, 3, (models, examples))
  u[:, 1] = 2.0  # all unlearned models equal
  u[:, 2], r[:, 2] = 4.0, 4.0  # everything equal: the [lo, lo + 1] range
  u[:, 3] *= 100  # beyond the clip
  r[:, 4] += 30  # no overlap: every unlearned value in a bin no retrained value reaches
  u[:3, 5] = u[3, 5]  # ties
  return u, r


def test_klom_equals_the_published_binned_kl_example_by_example(monkeypatch):
  monkeypatch.setattr(klom, "_BLOCK", 16)  # examples binned in blocks: 40 = 16 + 16 + 8
  rng = np.random.default_rng(0)
  for models, examples in ((7, 40), (32, 40)):
    u, r = _margins(rng, models, examples)
    np.testing.assert_allclose(klom.klom(u, r), published_klom(u, r), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(klom.klom(u, r, bins=5, eps=1e-3),
                               published_klom(u, r, bins=5, eps=1e-3), rtol=1e-12)


def test_the_closed_last_bin_is_the_one_departure_and_why():
  """A population above every Retrain value: the published rule drops its values (0, "no
  difference"); closed, KLOM is log(1/eps), its largest value."""
  rng = np.random.default_rng(1)
  r = rng.normal(0, 1, (16, 3))
  u = np.full((16, 3), 9.0)
  assert (published_klom(u, r, closed_last_bin=False) == 0.0).all()
  np.testing.assert_allclose(klom.klom(u, r), np.log(1 / 1e-5 + 1), rtol=1e-4)


def test_retrain_against_itself_is_at_its_noise_floor_which_falls_with_population_size():
  rng = np.random.default_rng(2)
  r = rng.normal(0, 2, (64, 300))
  assert (klom.klom(r, r) == 0).all()  # identical populations
  floors = {}
  for n in (32, 128, 512):
    retrained = rng.normal(0, 2, (2 * n, 300))
    reference, other = klom.retrain_reference(retrained)
    floors[n] = klom.summarize(klom.klom(other, reference))["p95"]
    shifted = klom.versus(rng.normal(4.0, 2, (n, 300)), reference)["p95"]
    assert shifted > 1.5 * floors[n], (n, shifted, floors[n])
  assert floors[32] > 2 * floors[128] > 4 * floors[512] > 0  # about 1/N
  summary = klom.summarize(np.arange(101.0))
  assert summary == {"p95": 95.0, "mean": 50.0, "examples": 101}


def test_models_selected_per_example_and_halves():
  values = np.arange(24.0).reshape(6, 4)
  mask = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1],
                   [0, 1, 1, 0]], bool)  # 3 models per example
  picked = klom.by_mask(values, mask)
  np.testing.assert_array_equal(picked, [[0, 5, 2, 11], [8, 9, 6, 15], [16, 21, 22, 19]])
  reference, other = klom.retrain_reference(np.arange(8.0).reshape(4, 2))
  np.testing.assert_array_equal(reference, [[0, 1], [2, 3]])
  np.testing.assert_array_equal(other, [[4, 5], [6, 7]])
  # A method is compared with the reference's models: its first k selected ones.
  assert klom.versus(values[:2] + 100, values[:2])["p95"] == pytest.approx(np.log(1e5))


def test_bad_inputs_name_the_problem():
  with pytest.raises(ValueError, match=r"different sizes \(8 unlearned, 6 retrained"):
    klom.klom(np.zeros((8, 3)), np.zeros((6, 3)))
  with pytest.raises(ValueError, match="same examples"):
    klom.klom(np.zeros((8, 3)), np.zeros((8, 4)))
  mask = np.ones((4, 3), bool)
  mask[0, 2] = False
  with pytest.raises(ValueError, match="forget models: example 0 has 4 .* example 2 3"):
    klom.by_mask(np.zeros((4, 3)), mask, field="forget models")
  with pytest.raises(ValueError, match="even count"):
    klom.retrain_reference(np.zeros((5, 3)))
  with pytest.raises(ValueError, match="3 models against 4 Retrain models"):
    klom.versus(np.zeros((3, 2)), np.zeros((4, 2)))
