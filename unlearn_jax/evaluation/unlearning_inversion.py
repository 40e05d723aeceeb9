"""Unlearning inversion (Hu et al., S&P 2024, "Learn what you want to unlearn"; docs/math.md
§6.8): an attacker holding θ_o and θ_u infers the forgotten label and reconstructs forgotten
images from the parameter change alone.

- Label inference (the paper's, from its code): probing images x_c^k, optimised from noise so that
  θ_o classifies them as c, are fed to both models; the forgotten label is the class whose own
  confidence drops most, ŷ = argmin_c mean_k [p_{θ_u}(c | x_c^k) − p_{θ_o}(c | x_c^k)] (with |𝒞_f|
  forgotten classes, the |𝒞_f| lowest). A second, white-box reading: the head's bias change
  Δb = b_u − b_o, lowest for a class whose logits unlearning pushed down (for gradient ascent on
  D_f, Δb ∝ Σ (p − e_y), negative exactly at y).
- Feature recovery: gradient inversion (:mod:`~unlearn_jax.evaluation.inversion`, target
  "difference") of G* = θ_u − θ_o as if it were the gradient of the forget data, with the inferred
  label ŷ₁ in the attack's CE, scored by PSNR against the first forget images; "init PSNR" (the
  random starts) is the chance level.

The paper's own sign convention is θ_o − θ_u; the inversion module's θ_u − θ_o makes the cosine
+1 at the truth (see :func:`~unlearn_jax.evaluation.inversion.parameter_difference`). A model
equal to θ_o (Δθ = 0) gives no label and no reconstruction (None).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.inversion import InversionConfig, gradient_inversion, plot_inversion
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.methods import METHODS
from unlearn_jax.models import Model, final_layer
from unlearn_jax.objectives.losses import cross_entropy


@functools.cache
def _probe_step(model: Model, learning_rate: float):
  tx = optax.adam(learning_rate)

  def loss(images, params, model_state, labels):
    return jnp.sum(cross_entropy(model.apply(params, model_state, images)[1], labels))

  def step(images, opt_state, params, model_state, labels):
    updates, opt_state = tx.update(jax.grad(loss)(images, params, model_state, labels),
                                   opt_state, images)
    return jnp.clip(optax.apply_updates(images, updates), 0.0, 1.0), opt_state

  return tx, jax.jit(step)


def probing_samples(model: Model, params, model_state, *, key: jax.Array, per_class: int = 8,
                    steps: int = 100, learning_rate: float = 0.1) -> ArrayDataset:
  """K probing images per class c, optimised from x₀ ~ U[0, 1] by Adam on CE(h_θ(x), c) (θ's
  confidence in c), clipped to [0, 1] after each step; labels: the class each was made for.

  Raises:
    ValueError: ``per_class`` or ``steps`` < 1, or a learning rate ≤ 0.
  """
  if per_class < 1 or steps < 1 or not learning_rate > 0:
    raise ValueError(f"per_class, steps, learning_rate: {per_class}, {steps}, {learning_rate}; "
                     "need ≥ 1, ≥ 1 and > 0.")
  labels = np.repeat(np.arange(model.num_classes), per_class).astype(np.int32)
  images = jax.random.uniform(key, (len(labels), *model.input_shape))
  tx, step = _probe_step(model, float(learning_rate))
  opt_state = tx.init(images)
  for _ in range(steps):
    images, opt_state = step(images, opt_state, params, model_state, labels)
  return ArrayDataset(np.asarray(images), labels)


def _probabilities(model: Model, params, model_state, data: ArrayDataset) -> np.ndarray:
  logits = model_outputs(model, params, model_state, data)[1].astype(np.float64)
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  return p / p.sum(axis=1, keepdims=True)


def probe_scores(model: Model, original: tuple, unlearned: tuple, probes: ArrayDataset
                 ) -> np.ndarray:
  """s_c = mean over the probes made for c of p_{θ_u}(c | x) − p_{θ_o}(c | x): [C], lowest for
  the class whose confidence unlearning removed (classes without a probe: +inf)."""
  drop = (_probabilities(model, *unlearned, probes) - _probabilities(model, *original, probes))
  own = drop[np.arange(len(probes)), probes.labels]
  return np.array([own[probes.labels == c].mean() if np.any(probes.labels == c) else np.inf
                   for c in range(model.num_classes)])


def bias_scores(unlearned_params, original_params) -> np.ndarray:
  """Δb = b_{θ_u} − b_{θ_o} of the head: [C], lowest for the class pushed down most."""
  return np.asarray(final_layer(unlearned_params)[1] - final_layer(original_params)[1],
                    np.float64)


def infer_labels(scores: np.ndarray, k: int) -> tuple[int, ...] | None:
  """The ``k`` classes with the lowest ``scores`` (lowest first), or None when every score is the
  same (nothing changed: no label can be read).

  >>> infer_labels(np.array([0.1, -0.5, 0.0]), 1), infer_labels(np.zeros(3), 1)
  ((1,), None)
  """
  if not 1 <= k < len(scores):
    raise ValueError(f"k: {k}; allowed 1 ≤ k < {len(scores)} (the number of classes).")
  finite = scores[np.isfinite(scores)]
  if finite.size == 0 or np.ptp(finite) == 0.0:
    return None
  return tuple(int(c) for c in np.argsort(scores, kind="stable")[:k])


def label_accuracy(inferred: tuple[int, ...] | None, forget_classes) -> float | None:
  """Fraction of the forgotten classes among the inferred ones (None: nothing inferred)."""
  if inferred is None:
    return None
  return len(set(inferred) & set(forget_classes)) / len(forget_classes)


@dataclasses.dataclass(frozen=True)
class UIASettings(registry.Settings):
  """Label inference on every model (``probes_per_class`` probing images per class, optimised
  for ``probe_steps`` steps at ``probe_learning_rate``); the reconstruction of the first
  ``num_images`` forget images (the search of :class:`~unlearn_jax.evaluation.inversion.
  InversionConfig`) only on the models named in ``invert`` (those a run has); off unless a config
  turns it on."""

  enabled: bool = False
  probes_per_class: int = 8
  probe_steps: int = 100
  probe_learning_rate: float = 0.1
  invert: tuple[str, ...] = ("retrain", "ga", "spotter", "opc")
  num_images: int = 4
  iterations: int = 300
  restarts: int = 1
  learning_rate: float = 0.1

  def __post_init__(self):
    unknown = sorted(set(self.invert) - set(METHODS))
    if unknown:
      raise ValueError(f"config.evaluation.uia.invert: {unknown} are not methods; known: "
                       f"{', '.join(sorted(METHODS))}.")
    if self.probes_per_class < 1 or self.probe_steps < 1 or not self.probe_learning_rate > 0:
      raise ValueError("config.evaluation.uia.probes_per_class, probe_steps, "
                       f"probe_learning_rate: {self.probes_per_class}, {self.probe_steps}, "
                       f"{self.probe_learning_rate}; need ≥ 1, ≥ 1 and > 0.")


def _prepare(model: Model, original: tuple, splits, retrains, settings: UIASettings, *,
             seed: int) -> ArrayDataset:
  """The probing images, made once per experiment from θ_o."""
  return probing_samples(model, *original, key=seeding.device_key(seed, "uia_probes"),
                         per_class=settings.probes_per_class, steps=settings.probe_steps,
                         learning_rate=settings.probe_learning_rate)


def _evaluate(model: Model, params, model_state, context, settings: UIASettings, *, seed: int,
              name: str | None) -> tuple[dict, dict]:
  """"uia/label" (probing) and "uia/label_bias" (head bias): fraction of the forgotten classes
  inferred; on the ``invert`` models "uia/psnr" and "uia/init_psnr" (dB) of the reconstruction
  with the inferred label; details "uia" (the images, drawn by the inversion plot)."""
  forget_classes = context.splits.forget_classes
  original_params = context.original[0]
  k = len(forget_classes)
  probed = infer_labels(probe_scores(model, context.original, (params, model_state),
                                     context.shared["uia"]), k)
  metrics = {"uia/label": label_accuracy(probed, forget_classes),
             "uia/label_bias": label_accuracy(infer_labels(
                 bias_scores(params, original_params), k), forget_classes),
             "uia/psnr": None, "uia/init_psnr": None}
  if name not in settings.invert or probed is None:
    return metrics, {}
  forget = context.splits.forget
  truth = forget.subset(np.arange(min(settings.num_images, len(forget))))
  attacked = truth.with_labels(np.full(len(truth), probed[0], np.int32))
  inv = gradient_inversion(model, params, model_state, attacked, seed=seed, target="difference",
                           original_params=original_params,
                           config=InversionConfig(iterations=settings.iterations,
                                                  restarts=settings.restarts,
                                                  learning_rate=settings.learning_rate))
  metrics |= {"uia/psnr": float(inv["psnr_mean"]), "uia/init_psnr": float(inv["init_psnr_mean"])}
  return metrics, {"uia": {"reconstructions": np.asarray(inv["reconstructions"]).tolist(),
                           "truth": truth.images.tolist(), "psnr": float(inv["psnr_mean"]),
                           "ssim": float(inv["ssim_mean"]), "label": probed[0]}}


COLUMNS = (("UIA label", "uia/label", ".2f"), ("UIA PSNR", "uia/psnr", ".1f"))

METRIC = registry.register(registry.Metric(
    "uia", _evaluate, UIASettings, needs=("original", "classes"), prepare=_prepare, named=True,
    plot=("uia.png", functools.partial(plot_inversion, key="uia",
                                       title="Unlearning inversion of θ_u − θ_o, label inferred")),
    more_columns=lambda _: COLUMNS))


__all__ = ["COLUMNS", "METRIC", "UIASettings", "bias_scores", "infer_labels", "label_accuracy",
           "probe_scores", "probing_samples"]
