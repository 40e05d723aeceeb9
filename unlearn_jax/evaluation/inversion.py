"""Gradient-inversion reconstruction of forget images (OPC, docs/math.md §3.3).

The attacker sees a parameter gradient G* of the model and searches for an image whose gradient
points the same way (Geiping et al., 2020, "Inverting gradients"):

  x̂ = argmin_{x̂ ∈ [0,1]^{H×W×C}} 1 − cos(vec ∇_θ CE(h_θ(x̂), y), vec G*) + α_TV · TV(x̂).

Targets: G* = ∇_θ CE(h_{θ_u}(x), y) of one image (``target="gradient"``) or the parameter change of
unlearning (``target="difference"``, G* = θ_u − θ_o; see :func:`parameter_difference`). The search
runs in pixel space from x̂₀ ~ U[0, 1]^{H×W×C}: Adam on the sign of ∇_x̂ loss, learning rate ×0.1 at
3/8, 5/8 and 7/8 of the run, x̂ clipped to [0, 1] after every step, R restarts of which the lowest
final loss is kept. Batch norm runs in eval mode, so batch statistics cannot leak the image. A batch
of images and their restarts runs as one jitted program (vmap over both, ``lax.scan`` over
iterations); how many images a program takes is chosen per backend (:func:`default_batch_size`).
"""

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import as_dataset
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.image_metrics import psnr, ssim
from unlearn_jax.models import Model
from unlearn_jax.objectives.losses import cross_entropy

TARGETS = ("gradient", "difference")
DECAY_POINTS = (3 / 8, 5 / 8, 7 / 8)
SSIM_SIGMA = 1.5


@dataclasses.dataclass(frozen=True)
class InversionConfig:
  """The search: ``iterations`` T of Adam(``learning_rate``) per restart, ``restarts`` R, α_TV.

  T = 4,800 is Geiping et al.'s fast setting (docs/math.md §3.3). The learning rate acts in pixel
  units: the recipe's 0.1 (docs/math.md §3.3) is in normalised units, i.e. 0.1·σ ≈ 0.03 pixels
  for channel σ ≈ 0.25–0.38 (CIFAR, digits). Short CPU runs (a few hundred steps on 8×8 digits)
  do better with 0.1.
  """

  iterations: int = 4800
  restarts: int = 2
  learning_rate: float = 0.03
  tv_weight: float = 1e-4

  def validate(self) -> None:
    """Raises ValueError naming the field and what is allowed."""
    for field in ("iterations", "restarts"):
      if getattr(self, field) < 1:
        raise ValueError(f"inversion.{field}: {getattr(self, field)}; must be ≥ 1.")
    if not self.learning_rate > 0:
      raise ValueError(f"inversion.learning_rate: {self.learning_rate}; must be > 0.")
    if not self.tv_weight >= 0:
      raise ValueError(f"inversion.tv_weight: {self.tv_weight}; must be ≥ 0.")


def total_variation(image: jax.Array) -> jax.Array:
  """TV(x) = Σ_{i,j,c} |x_{i+1,j,c} − x_{i,j,c}| + |x_{i,j+1,c} − x_{i,j,c}| (anisotropic L1).

  Args:
    image: [H, W, C].

  Returns:
    A scalar; 0 for a constant image.
  """
  return (jnp.sum(jnp.abs(image[1:] - image[:-1]))
          + jnp.sum(jnp.abs(image[:, 1:] - image[:, :-1])))


def parameter_gradient(model: Model, params, model_state, image: jax.Array,
                       label: jax.Array):
  """G = ∇_θ CE(h_θ(x), y) of one image, batch norm in eval mode (docs/math.md §3.3).

  Args:
    model, params, model_state: h_θ.
    image: [H, W, C] in [0, 1]. label: int scalar y.

  Returns:
    A pytree shaped like ``params``. If f_θ(x) = 0, its ``head.kernel`` part (p − e_y) zᵀ is
    exactly 0 (docs/math.md §3.1 (ii)).
  """

  def loss(p):
    logits = model.apply(p, model_state, image[None])[1]
    return cross_entropy(logits, label[None])[0]

  return jax.grad(loss)(params)


def parameter_difference(unlearned_params, original_params):
  """G* = θ_u − θ_o: the unlearning update as an aggregated gradient (variant B, docs/math.md §3.3).

  Args:
    unlearned_params, original_params: θ_u and θ_o, pytrees of one architecture.

  Returns:
    A pytree shaped like the parameters.

  Sign: gradient ascent on D_f gives θ_u − θ_o = +η Σ ∇_θ CE(D_f); training without D_f gives
  θ_o ≈ θ_u − η Σ ∇_θ CE(D_f). Both point along +∇ CE of the forget data, so the cosine of the
  attack is +1 at the truth (other write-ups use θ_o − θ_u; the cosine is sign-sensitive).
  """
  return jax.tree.map(jnp.subtract, unlearned_params, original_params)


def gradient_cosine(grads, target) -> jax.Array:
  """cos(vec g, vec G*) = ⟨g, G*⟩ / (‖g‖ ‖G*‖) over all leaves of two pytrees of one structure.

  Returns:
    A scalar in [−1, 1]; 0, with a finite gradient, if either vector is 0.

  >>> round(float(gradient_cosine({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([2.0, 2.0])})), 4)
  0.7071
  """
  leaves, target_leaves = jax.tree.leaves(grads), jax.tree.leaves(target)
  dot = sum(jnp.vdot(a, b) for a, b in zip(leaves, target_leaves, strict=True))
  inverse_norms = []
  for parts in (leaves, target_leaves):
    squared = sum(jnp.vdot(a, a) for a in parts)
    inverse_norms.append(jnp.where(squared > 0, jax.lax.rsqrt(jnp.where(squared > 0, squared,
                                                                        1.0)), 0.0))
  return dot * inverse_norms[0] * inverse_norms[1]


def inversion_loss(model: Model, params, model_state, image: jax.Array, label: jax.Array,
                   target, *, tv_weight: float) -> jax.Array:
  """1 − cos(vec ∇_θ CE(h_θ(x̂), y), vec G*) + α_TV · TV(x̂): the objective (docs/math.md §3.3).

  Args:
    model, params, model_state: h_θ (eval-mode batch norm).
    image: x̂ [H, W, C]. label: int scalar y. target: G*, shaped like ``params``.
    tv_weight: α_TV.

  Returns:
    A scalar in [0, 2 + α_TV·TV(x̂)]; twice differentiable in ``image`` through ∇_θ.
  """
  grads = parameter_gradient(model, params, model_state, image, label)
  return 1.0 - gradient_cosine(grads, target) + tv_weight * total_variation(image)


def ssim_sigma(image_shape) -> float:
  """σ of SSIM's Gaussian window: 1.5 (11×11), or r/3.5 for images smaller than the window, the
  largest σ whose window 2r + 1, r = ⌊(min(H, W) − 1)/2⌋, fits (8×8 digits: r = 3, σ ≈ 0.86)."""
  radius = (min(image_shape[:2]) - 1) // 2
  return min(SSIM_SIGMA, radius / 3.5)


def _schedule(config: InversionConfig) -> optax.Schedule:
  points = jnp.asarray([int(f * config.iterations) for f in DECAY_POINTS])
  return lambda step: config.learning_rate * 0.1 ** jnp.sum(step >= points)


def invert(model: Model, params, model_state, targets, labels: jax.Array, keys: jax.Array,
           config: InversionConfig, *, shared_target: bool = False):
  """Reconstructs B images from their target gradients; pure, jit-able (docs/math.md §3.3).

  Image b uses ``keys[b]`` alone (split into its R restarts), so a batch equals a loop over its
  images.

  Args:
    model, params, model_state: the attacked model h_θ (eval-mode batch norm).
    targets: G* pytree shaped like ``params`` with a leading axis B (or without it if
      ``shared_target``: one G* for every image).
    labels: int [B] labels y used in the attack's CE.
    keys: [B] PRNG keys.
    config: the search (static).

  Returns:
    (reconstructions [B, H, W, C] in [0, 1], final losses [B], initial images x̂₀ [B, H, W, C]
    of the kept restarts).
  """
  tx = optax.adam(_schedule(config))
  loss_fn = functools.partial(inversion_loss, model, params, model_state,
                              tv_weight=config.tv_weight)
  grad_fn = jax.grad(loss_fn)

  def run(target, label, key):
    start = jax.random.uniform(key, model.input_shape)

    def body(carry, _):
      image, opt_state = carry
      updates, opt_state = tx.update(jnp.sign(grad_fn(image, label, target)), opt_state, image)
      return (jnp.clip(optax.apply_updates(image, updates), 0.0, 1.0), opt_state), None

    (image, _), _ = jax.lax.scan(body, (start, tx.init(start)), length=config.iterations)
    return image, loss_fn(image, label, target), start

  def one_image(target, label, key):
    images, losses, starts = jax.vmap(run, in_axes=(None, None, 0))(
        target, label, jax.random.split(key, config.restarts))
    best = jnp.argmin(losses)
    return images[best], losses[best], starts[best]

  return jax.vmap(one_image, in_axes=(None if shared_target else 0, 0, 0))(targets, labels, keys)


@functools.partial(jax.jit, static_argnames="sigma")
def _scores(images, starts, truth, *, sigma):
  return {"psnr": psnr(images, truth), "ssim": ssim(images, truth, sigma=sigma),
          "init_psnr": psnr(starts, truth)}


@functools.cache
def _attack_fn(model: Model, config: InversionConfig, target: str):
  """Jitted (params, state, original_params, images, labels, keys) → :func:`invert`'s output."""

  def attack(params, model_state, original_params, images, labels, keys):
    if target == "gradient":
      targets = jax.vmap(parameter_gradient, in_axes=(None, None, None, 0, 0))(
          model, params, model_state, images, labels)
    else:
      targets = parameter_difference(params, original_params)
    return invert(model, params, model_state, targets, labels, keys, config,
                  shared_target=target == "difference")

  return jax.jit(attack)


BATCH_SIZE = 64  # images per program on accelerators


def default_batch_size() -> int:
  """Images per jitted inversion program: :data:`BATCH_SIZE` on accelerators, 1 on CPU.

  Vmapping the per-image parameter gradient turns every convolution's weight gradient into a
  grouped convolution, which XLA:CPU runs slowly: on 2 CPU cores 64 images in one program took
  0.63× the speed of one image at a time, on one H200 9.98× (docs/performance.md). Results
  agree up to float reassociation either way (each image keeps its own key).
  """
  return 1 if jax.default_backend() == "cpu" else BATCH_SIZE


def gradient_inversion(model: Model, params, model_state, data: ArrayDataset, *, seed: int,
                       config: InversionConfig = InversionConfig(), target: str = "gradient",
                       original_params=None, batch_size: int | None = None) -> dict:
  """Gradient inversion of each image of ``data`` against θ, PSNR/SSIM-scored (docs/math.md §3.3).

  Args:
    model, params, model_state: the attacked model θ (θ_u; θ_o or θ_r for bounds).
    data: the target images x (e.g. some of D_f) and labels y, an :class:`ArrayDataset` or
      ``(images, labels)``.
    seed: image i's restarts start from ``device_key(seed, "inversion", i)``.
    config: the search.
    target: "gradient" (G* per image) or "difference" (G* = θ_u − θ_o, one for all images;
      needs ``original_params``).
    original_params: θ_o for ``target="difference"``.
    batch_size: images per jitted call (memory: B·R per-example parameter gradients); None: the
      faster form on this backend, :func:`default_batch_size`.

  Returns:
    {"reconstructions": float32 [N, H, W, C], "loss", "psnr" (dB), "ssim", "init_psnr" (PSNR of
    the start images x̂₀: the chance level): float [N] arrays, their means "loss_mean",
    "psnr_mean", "ssim_mean", "init_psnr_mean", and "ssim_sigma" (see :func:`ssim_sigma`)}.

  Raises:
    ValueError: an empty ``data``, an unknown ``target``, ``target="difference"`` without
      ``original_params`` or with mismatched parameter shapes, or an invalid ``config``.
  """
  config.validate()
  data = as_dataset(data)
  if target not in TARGETS:
    raise ValueError(f"target: {target!r}; allowed: {', '.join(TARGETS)}.")
  if len(data) == 0:
    raise ValueError("data: no target image to reconstruct.")
  batch_size = default_batch_size() if batch_size is None else batch_size
  if batch_size < 1:
    raise ValueError(f"batch_size: {batch_size}; must be ≥ 1.")
  truth = data.images
  model.check_images(truth)
  if target == "difference":
    if original_params is None:
      raise ValueError("original_params: target='difference' needs θ_o.")
    shapes = jax.tree.map(jnp.shape, params), jax.tree.map(jnp.shape, original_params)
    if shapes[0] != shapes[1]:
      raise ValueError("original_params: its shapes differ from params'; the architectures do "
                       "not match.")
  attack = _attack_fn(model, config, target)
  keys = jnp.stack([seeding.device_key(seed, "inversion", i) for i in range(len(data))])
  outputs = []
  for start in range(0, len(data), batch_size):
    stop = min(start + batch_size, len(data))
    outputs.append(jax.device_get(attack(params, model_state, original_params,
                                         truth[start:stop], data.labels[start:stop],
                                         keys[start:stop])))
  images, losses, starts = (np.concatenate(parts) for parts in zip(*outputs, strict=True))
  sigma = ssim_sigma(model.input_shape)
  scores = jax.device_get(_scores(images, starts, truth, sigma=sigma))
  return {"reconstructions": images, "loss": losses, **scores,
          **{f"{name}_mean": float(np.mean(v)) for name, v in scores.items()},
          "loss_mean": float(np.mean(losses)), "ssim_sigma": sigma}


def inversion_bounds(model: Model, models: Mapping[str, tuple], data: ArrayDataset, *,
                     seed: int, config: InversionConfig = InversionConfig(),
                     batch_size: int | None = None) -> dict:
  """The same attack (same images, starts and search) on each named model, e.g. the original
  θ_o (upper bound) and Retrain θ_r (reference) beside θ_u (docs/math.md §3.3).

  Args:
    models: {name: (params, model_state)}, all of ``model``'s architecture.
    data, seed, config, batch_size: as :func:`gradient_inversion` (``target="gradient"``).

  Returns:
    {name: :func:`gradient_inversion`'s dict}.
  """
  return {name: gradient_inversion(model, params, state, data, seed=seed, config=config,
                                   batch_size=batch_size)
          for name, (params, state) in models.items()}


@dataclasses.dataclass(frozen=True)
class InversionSettings(registry.Settings):
  """Gradient inversion of the first ``num_images`` forget images, on the ``models`` named, with
  the search of :class:`InversionConfig`."""

  # The models attacked, those of them that a run has (others named are skipped).
  models: tuple[str, ...] = ("original", "retrain", "ga", "spotter", "opc",
                              "spotter_align")
  num_images: int = 4
  iterations: int = 300
  restarts: int = 1
  learning_rate: float = 0.1


def _evaluate(model: Model, params, model_state, context, settings: InversionSettings, *,
              seed: int) -> tuple[dict, dict]:
  """"inversion/psnr": mean PSNR (dB) of the reconstructions; details "inversion" (images)."""
  forget = context.splits.forget
  targets = forget.subset(np.arange(min(settings.num_images, len(forget))))
  inv = gradient_inversion(model, params, model_state, targets, seed=seed,
                           config=InversionConfig(iterations=settings.iterations,
                                                  restarts=settings.restarts,
                                                  learning_rate=settings.learning_rate))
  return ({"inversion/psnr": float(inv["psnr_mean"])},
          {"inversion": {"reconstructions": np.asarray(inv["reconstructions"]).tolist(),
                         "truth": targets.images.tolist(), "psnr": float(inv["psnr_mean"]),
                         "ssim": float(inv["ssim_mean"])}})


def plot_inversion(models: dict, path, *, key: str = "inversion",
                   title: str = "Gradient inversion of forget images") -> None:
  """A grid of the true forget images and every inverted model's reconstructions
  (``details[key]``)."""
  from matplotlib.figure import Figure

  runs = {n: m["details"][key] for n, m in models.items() if key in m.get("details", {})}
  if not runs:
    return
  truth = np.asarray(next(iter(runs.values()))["truth"])
  rows = [("true", truth)] + [(f"{n} ({r['psnr']:.1f} dB)", np.asarray(r["reconstructions"]))
                              for n, r in runs.items()]
  cols = len(truth)
  fig = Figure(figsize=(1.3 * cols + 1.5, 1.3 * len(rows)))
  axes = fig.subplots(len(rows), cols, squeeze=False)
  for r, (label, images) in enumerate(rows):
    for c in range(cols):
      ax = axes[r][c]
      image = np.clip(images[c], 0, 1)
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
    axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


METRIC = registry.register(registry.Metric(
    "inversion", _evaluate, InversionSettings, columns=(("Inv. PSNR", "inversion/psnr", ".1f"),),
    plot=("inversion.png", plot_inversion)))


__all__ = ["BATCH_SIZE", "InversionConfig", "InversionSettings", "METRIC", "default_batch_size",
           "gradient_cosine", "gradient_inversion", "inversion_bounds", "inversion_loss", "invert",
           "parameter_difference", "parameter_gradient", "plot_inversion", "ssim_sigma",
           "total_variation"]
