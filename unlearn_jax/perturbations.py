"""Perturbed copies of images near the forget set, made once from the frozen original model.

Used by Spotter (its "nearby region" term), OU@ε (the set it averages over) and Boundary Shrink
(FGSM). Three PGD modes (docs/math.md §2.1):

- ``targeted_boundary`` (default): pixel space [0, 1] (the model normalises inside), descent on
  the runner-up class's CE, i.e. a step *toward* it;
- ``reference``: the Spotter reference code's PGD on [0, 1] inputs (a model that normalises
  inside, as its Fashion-MNIST models do): pixel space, *ascent* on the runner-up's CE (a step
  away from it);
- ``reference_compat``: the reference CIFAR notebook, whose inputs are already normalised: ascent,
  ε and step in normalised units, and clipping of the *normalised* tensor to [0, 1].
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import Model
from unlearn_jax.objectives.losses import cross_entropy
from unlearn_jax.training import sharding

MODES = ("targeted_boundary", "reference", "reference_compat")
# +1: ascend CE(θ_o(x̃), t) (away from the runner-up t); −1: descend it (toward t).
SIGNS = {"targeted_boundary": -1.0, "reference": 1.0, "reference_compat": 1.0}
KINDS = ("pgd", "gaussian")


@dataclasses.dataclass(frozen=True)
class PerturbationConfig:
  """How to perturb. ``beta``/``beta_quantile`` keep only x̃ with |m_y(x̃; θ_o)| ≤ β.

  The defaults are Spotter's training set Ã (``methods.spotter.PGD``, no β filter); OU@ε's sets
  add ``beta_quantile=0.5`` (``evaluation.over_unlearning.EVAL_PGD``).
  """

  kind: str = "pgd"
  mode: str = "targeted_boundary"
  eps: float = 8 / 255
  step_size: float = 0.01
  num_steps: int = 3
  sigma: float = 0.01
  beta: float | None = None
  beta_quantile: float | None = None

  def validate(self) -> None:
    if self.kind not in KINDS:
      raise ValueError(f"perturbation.kind: {self.kind!r}; allowed: {', '.join(KINDS)}.")
    if self.mode not in MODES:
      raise ValueError(f"perturbation.mode: {self.mode!r}; allowed: {', '.join(MODES)}.")
    for field in ("eps", "step_size", "sigma"):
      if getattr(self, field) < 0:
        raise ValueError(f"perturbation.{field}: {getattr(self, field)} < 0; must be ≥ 0.")
    if self.num_steps < 0:
      raise ValueError(f"perturbation.num_steps: {self.num_steps} < 0.")
    if self.beta is not None and self.beta_quantile is not None:
      raise ValueError("perturbation: give at most one of beta and beta_quantile.")
    if self.beta_quantile is not None and not 0 < self.beta_quantile <= 1:
      raise ValueError(f"perturbation.beta_quantile: {self.beta_quantile} not in (0, 1].")


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """m_y(x) = s_y(x) − max_{k≠y} s_k(x) per example."""
  true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return true - others.max(axis=-1)


def runner_up_target(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """t = second class of θ_o if its top-1 is the true label, else its top-1."""
  top2 = jnp.argsort(logits, axis=-1)[:, ::-1][:, :2]
  return jnp.where(top2[:, 0] == labels, top2[:, 1], top2[:, 0])


def _spaces(model: Model, mode: str):
  """(to_space, from_space): pixel space is the identity, reference_compat normalises with the
  model's ``normalization``.

  Raises:
    ValueError: reference_compat for a model that does not state its normalisation.
  """
  if mode != "reference_compat":
    return (lambda x: x), (lambda z: z)
  if model.normalization is None:
    raise ValueError(f"perturbation.mode: 'reference_compat' works in the normalised space of "
                     f"the model's inputs, and model '{model.name}' states no normalisation; "
                     "build it with Model.from_module(..., mean=, std=) or use mode "
                     "'targeted_boundary' or 'reference'.")
  mean, std = (jnp.asarray(v).reshape(1, 1, 1, -1) for v in model.normalization)
  return (lambda x: (x - mean) / std), (lambda z: z * std + mean)


def pgd(model: Model, params, model_state, images: jax.Array, labels: jax.Array, key: jax.Array,
        config: PerturbationConfig) -> jax.Array:
  """L∞ PGD from a uniform start in the ε-ball toward (targeted_boundary) or away from (reference,
  reference_compat) the runner-up class t: x' ← Π_{ε-ball ∩ [0,1]}(x' ∓ step·sign ∇ CE(θ_o(x'), t)),
  the sign from :data:`SIGNS`; all of it in normalised space for reference_compat."""
  to_space, from_space = _spaces(model, config.mode)
  sign = SIGNS[config.mode]

  def logits_of(z):
    return model.apply(params, model_state, from_space(z))[1]

  z0 = to_space(images)
  target = runner_up_target(logits_of(z0), labels)
  loss_grad = jax.grad(lambda z: jnp.sum(cross_entropy(logits_of(z), target)))

  def project(z):
    return jnp.clip(jnp.clip(z, z0 - config.eps, z0 + config.eps), 0.0, 1.0)

  z = project(z0 + jax.random.uniform(key, z0.shape, minval=-config.eps, maxval=config.eps))
  for _ in range(config.num_steps):
    z = project(z + sign * config.step_size * jnp.sign(loss_grad(z)))
  return from_space(z)


def gaussian(model: Model, images: jax.Array, key: jax.Array,
             config: PerturbationConfig) -> jax.Array:
  """x̃ = clip(x + N(0, σ²), 0, 1) (clipped in normalised space in reference_compat mode)."""
  to_space, from_space = _spaces(model, config.mode)
  z = to_space(images)
  return from_space(jnp.clip(z + config.sigma * jax.random.normal(key, z.shape), 0.0, 1.0))


def fgsm(model: Model, params, model_state, images: jax.Array, labels: jax.Array, *,
         eps: float, quantize: bool = True) -> jax.Array:
  """x' = clip(x + ε·sign ∇_x CE(θ(x), y), 0, 1), rounded to 1/255 (Boundary Shrink)."""
  grad = jax.grad(lambda x: jnp.sum(cross_entropy(
      model.apply(params, model_state, x)[1], labels)))(images)
  adv = jnp.clip(images + eps * jnp.sign(grad), 0.0, 1.0)
  return jnp.round(adv * 255) / 255 if quantize else adv


@functools.cache
def _perturb_fn(model: Model, config: PerturbationConfig):
  """Jitted (params, model_state, key, images, labels, mask, b) -> (x̃, margin under θ_o), per
  config; batch b draws from ``fold_in(key, b)``."""

  def perturb(params, model_state, key, images, labels, _, b):
    key = jax.random.fold_in(key, b)
    if config.kind == "pgd":
      x = pgd(model, params, model_state, images, labels, key, config)
    else:
      x = gaussian(model, images, key, config)
    return x, margin(model.apply(params, model_state, x)[1], labels)

  return jax.jit(perturb)


def perturbed_set(model: Model, params, model_state, data: ArrayDataset, key: jax.Array,
                  config: PerturbationConfig, *, batch_size: int = 64) -> ArrayDataset:
  """One perturbed copy of every image of ``data`` (labels kept), then the optional β filter.

  A function of ``key`` alone (batch b uses ``fold_in(key, b)``); batches are split over all
  devices (small ones: PGD's program stays in cache on CPU, docs/performance.md).

  Raises:
    ValueError: an invalid config, mode "reference_compat" for a model without
      ``normalization``, or a β filter that keeps no example.
  """
  config.validate()
  _spaces(model, config.mode)  # reference_compat without a normalisation fails before any work
  # The β filter runs on the host: configs that differ only in it share one compiled program.
  program = _perturb_fn(model, dataclasses.replace(config, beta=None, beta_quantile=None))
  images, margins = sharding.map_batches(program, data, batch_size=batch_size,
                                         replicated_args=(params, model_state, key))
  margins = np.abs(margins)
  beta = config.beta
  if config.beta_quantile is not None:
    beta = float(np.quantile(margins, config.beta_quantile))
  keep = np.ones(len(margins), bool) if beta is None else margins <= beta
  if not keep.any():
    raise ValueError(f"perturbation.beta: no perturbed example has |margin| ≤ {beta}.")
  return ArrayDataset(images[keep].astype(np.float32), data.labels[keep])
