"""Over-unlearning OU@ε (Spotter, docs/math.md §2.2): how far unlearning moved the model near
the forget set, measured against the original model with the forget classes masked out.

  OU@ε = (1/|Ã|) Σ_{x̃ ∈ Ã} JS(p̃_{θ_o}(x̃), p_{θ_u}(x̃)),

with p̃ the masked softmax (forget classes zeroed, renormalised) and JS the Jensen–Shannon
divergence (natural log, in [0, ln 2]). Lower is better; it is not measured against Retrain (Retrain
itself scores about 0.24 on CIFAR-10 in the reference notebook).

The perturbed set Ã is built once from θ_o and a recorded key (:func:`ou_sets`), in one of three
modes (:data:`SETS`, docs/math.md §2.1):

- "targeted_boundary" (our default): PGD in pixel space toward the runner-up class (ε = 8/255,
  step 0.01, 3 steps) and Gaussian noise (σ = 0.01), each followed by the β filter of the paper's
  A_ε(D_f; θ_o) = {x̃ : |m_y(x̃; θ_o)| ≤ β} with β the median |margin| (``beta_quantile=0.5``: the
  half of the set nearest θ_o's decision boundary; the paper's β value is not known to us);
- "reference": the Spotter reference code's PGD on [0, 1] inputs: ε = 0.03 and step 0.01 in
  pixel units, ascent on the runner-up's CE (away from it), clipping to [0, 1], no β filter;
- "reference_compat": the Spotter CIFAR notebook: the same in normalised units, with clipping of
  the normalised tensors, no β filter.
"""

import dataclasses

import jax
import jax.numpy as jnp

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import as_dataset
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.outputs import model_outputs
from unlearn_jax.models import Model
from unlearn_jax.objectives.compose import forget_mask
from unlearn_jax.objectives.losses import js_divergence, masked_softmax
from unlearn_jax.perturbations import PerturbationConfig, perturbed_set

EVAL_PGD = PerturbationConfig(kind="pgd", mode="targeted_boundary", eps=8 / 255, step_size=0.01,
                              num_steps=3, beta_quantile=0.5)
EVAL_GAUSSIAN = PerturbationConfig(kind="gaussian", mode="targeted_boundary", sigma=0.01,
                                   beta_quantile=0.5)
REFERENCE_PGD = PerturbationConfig(kind="pgd", mode="reference_compat", eps=0.03, step_size=0.01,
                                   num_steps=3)
REFERENCE_GAUSSIAN = PerturbationConfig(kind="gaussian", mode="reference_compat", sigma=0.01)
PIXEL_REFERENCE_PGD = PerturbationConfig(kind="pgd", mode="reference", eps=0.03, step_size=0.01,
                                         num_steps=3)
PIXEL_REFERENCE_GAUSSIAN = PerturbationConfig(kind="gaussian", mode="reference", sigma=0.01)
# Perturbation mode → the default (PGD, Gaussian) configs of its OU@ε sets.
SETS = {"targeted_boundary": (EVAL_PGD, EVAL_GAUSSIAN),
        "reference": (PIXEL_REFERENCE_PGD, PIXEL_REFERENCE_GAUSSIAN),
        "reference_compat": (REFERENCE_PGD, REFERENCE_GAUSSIAN)}


def ou_divergence(original_logits: jax.Array, unlearned_logits: jax.Array,
                  forget: jax.Array) -> jax.Array:
  """JS(p̃_{θ_o}(x̃), p_{θ_u}(x̃)) per example (docs/math.md §2.2).

  p̃ = softmax of the original logits over the kept classes (forget entries exactly 0); p = the
  unlearned model's full softmax. 0 when θ_u predicts p̃; at most ln 2.

  Args:
    original_logits: [N, C] logits of θ_o on Ã.
    unlearned_logits: [N, C] logits of θ_u on the same inputs.
    forget: bool [C], True on 𝒞_f (at least one class kept; see :func:`forget_mask`).

  Returns:
    [N] per-example JS divergences.

  Raises:
    ValueError: logits not [N, C] or of different shapes, or ``forget`` not [C].
  """
  if original_logits.ndim != 2 or original_logits.shape != unlearned_logits.shape:
    raise ValueError(f"original_logits/unlearned_logits: expected two arrays of one shape "
                     f"[N, C], got {original_logits.shape} and {unlearned_logits.shape}.")
  if forget.shape != original_logits.shape[1:]:
    raise ValueError(f"forget: expected shape {original_logits.shape[1:]}, got {forget.shape}.")
  teacher = masked_softmax(original_logits, forget[None, :])
  return js_divergence(jax.nn.softmax(unlearned_logits, axis=-1), teacher)


def over_unlearning(original_logits: jax.Array, unlearned_logits: jax.Array, forget: jax.Array,
                    *, where: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(Σ_i w_i JS_i, Σ_i w_i) over Ã; OU@ε = sum / count (exact across batches and padding).

  Args:
    original_logits, unlearned_logits, forget: as :func:`ou_divergence`.
    where: optional [N] weights or bool mask (0 = padding).

  Returns:
    (sum, count), two scalars.

  Raises:
    ValueError: as :func:`ou_divergence`, or ``where`` not [N].
  """
  js = ou_divergence(original_logits, unlearned_logits, forget)
  w = jnp.ones_like(js) if where is None else jnp.asarray(where, js.dtype)
  if w.shape != js.shape:
    raise ValueError(f"where: expected shape {js.shape}, got {w.shape}.")
  return jnp.sum(js * w), jnp.sum(w)


_over_unlearning = jax.jit(over_unlearning)


def ou_at_eps(model: Model, params, model_state, perturbed, *, original: tuple,
              forget_classes, batch_size: int = 512) -> float:
  """OU@ε of θ_u = (``params``, ``model_state``) on one perturbed set Ã.

  Args:
    model: the architecture shared by θ_o and θ_u.
    params, model_state: θ_u.
    perturbed: Ã (an :class:`ArrayDataset` or ``(images, labels)``), e.g. one set of
      :func:`ou_sets`.
    original: (params, model_state) of θ_o.
    forget_classes: the forgotten class ids 𝒞_f.
    batch_size: forward-pass batch size.

  Returns:
    OU@ε, a float in [0, ln 2].

  Raises:
    ValueError: an empty ``perturbed`` set or invalid ``forget_classes``.
  """
  perturbed = as_dataset(perturbed, "perturbed")
  if len(perturbed) == 0:
    raise ValueError("perturbed: the perturbed set is empty.")
  mask = forget_mask(forget_classes, model.num_classes)
  original_logits = model_outputs(model, *original, perturbed, batch_size=batch_size)[1]
  unlearned_logits = model_outputs(model, params, model_state, perturbed,
                                   batch_size=batch_size)[1]
  total, count = _over_unlearning(original_logits, unlearned_logits, mask)
  return float(total / count)


def ou_sets(model: Model, params, model_state, forget, key: jax.Array, *,
            mode: str = "targeted_boundary", reference_compat: bool = False,
            pgd: PerturbationConfig | None = None, gaussian: PerturbationConfig | None = None,
            batch_size: int = 64) -> dict[str, ArrayDataset]:
  """The PGD and Gaussian perturbed sets Ã of D_f under θ_o, a function of ``key`` alone.

  Args:
    model, params, model_state: the original model θ_o.
    forget: D_f (images in [0, 1] and labels): an :class:`ArrayDataset` or ``(images, labels)``.
    key: PRNG key; the PGD set uses ``split(key)[0]``, the Gaussian set ``split(key)[1]``.
    mode: whose default configs (:data:`SETS`): "targeted_boundary" (ours), "reference" (the
      reference code on [0, 1] inputs) or "reference_compat" (the Spotter CIFAR notebook).
    reference_compat: the same as ``mode="reference_compat"`` (needs the model's
      ``normalization``, as every config of that mode).
    pgd, gaussian: configs that replace the mode's defaults.
    batch_size: perturbation batch size.

  Returns:
    {"pgd": Ã_PGD, "gaussian": Ã_Gauss}.

  Raises:
    ValueError: an empty ``forget`` set, an unknown mode, a config of the wrong kind, or an
      invalid config (ε < 0 etc.; the message names the field).
  """
  forget = as_dataset(forget, "forget")
  if len(forget) == 0:
    raise ValueError("forget: the forget set is empty.")
  mode = "reference_compat" if reference_compat else mode
  if mode not in SETS:
    raise ValueError(f"mode: {mode!r}; allowed: {', '.join(SETS)}.")
  configs = {"pgd": pgd or SETS[mode][0], "gaussian": gaussian or SETS[mode][1]}
  for kind, config in configs.items():
    if config.kind != kind:
      raise ValueError(f"{kind}: expected a config with kind={kind!r}, got kind={config.kind!r}.")
    config.validate()
  keys = jax.random.split(key)
  return {kind: perturbed_set(model, params, model_state, forget, k, config,
                              batch_size=batch_size)
          for k, (kind, config) in zip(keys, configs.items(), strict=True)}


def ou_metrics(model: Model, params, model_state, sets: dict[str, ArrayDataset], *,
               original: tuple, forget_classes, batch_size: int = 512) -> dict[str, float]:
  """{"OU/<set name>": OU@ε} of θ_u = (``params``, ``model_state``) against θ_o = ``original``
  on every perturbed set of ``sets`` (e.g. :func:`ou_sets`).

  Raises:
    ValueError: as :func:`ou_at_eps`.
  """
  return {f"OU/{name}": ou_at_eps(model, params, model_state, data, original=original,
                                  forget_classes=forget_classes, batch_size=batch_size)
          for name, data in sets.items()}


@dataclasses.dataclass(frozen=True)
class OUSettings(registry.Settings):
  """OU@ε's perturbed sets: ``mode`` gives the table's "OU/pgd" and "OU/gaussian"; each mode of
  ``also`` adds "OU/<mode>/pgd" and "OU/<mode>/gaussian" (and their columns). Modes: :data:`SETS`.
  """

  mode: str = "targeted_boundary"
  also: tuple[str, ...] = ()

  def __post_init__(self):
    for field, modes in (("mode", (self.mode,)), ("also", self.also)):
      unknown = [m for m in modes if m not in SETS]
      if unknown:
        raise ValueError(f"config.evaluation.ou.{field}: {unknown[0]!r} is not a mode; allowed: "
                         f"{', '.join(SETS)}.")


def _modes(settings: OUSettings) -> dict[str, str]:
  """Metric-key prefix → mode: "" for ``mode``, "<mode>/" for each of ``also``."""
  return {"": settings.mode} | {f"{m}/": m for m in settings.also if m != settings.mode}


def _prepare(model: Model, original: tuple, splits, retrains, settings: OUSettings, *,
             seed: int) -> dict[str, dict[str, ArrayDataset]]:
  """The perturbed sets Ã of D_f from θ_o per mode, drawn once per experiment from ``seed``
  (each mode from its own key, so adding a mode leaves the others' sets as they were)."""
  return {prefix: ou_sets(model, *original, splits.forget,
                          seeding.device_key(seed, "ou_sets", *([mode] if prefix else [])),
                          mode=mode)
          for prefix, mode in _modes(settings).items()}


def _evaluate(model: Model, params, model_state, context, settings: OUSettings, *,
              seed: int) -> tuple[dict, dict]:
  """:func:`ou_metrics` of θ_u against θ_o on each mode's prepared sets."""
  out = {}
  for prefix, sets in context.shared["ou"].items():
    values = ou_metrics(model, params, model_state, sets, original=context.original,
                        forget_classes=context.splits.forget_classes)
    out |= {key.replace("OU/", f"OU/{prefix}", 1): v for key, v in values.items()}
  return out, {}


def _more_columns(settings: OUSettings) -> tuple[tuple[str, str, str], ...]:
  """Two columns per mode of ``also``."""
  return tuple(column for prefix, mode in _modes(settings).items() if prefix
               for column in ((f"OU PGD {mode}", f"OU/{prefix}pgd", ".4f"),
                              (f"OU Gauss {mode}", f"OU/{prefix}gaussian", ".4f")))


METRIC = registry.register(registry.Metric(
    "ou", _evaluate, OUSettings,
    columns=(("OU PGD", "OU/pgd", ".4f"), ("OU Gauss", "OU/gaussian", ".4f")),
    needs=("classes", "original"), prepare=_prepare, more_columns=_more_columns))


__all__ = ["EVAL_GAUSSIAN", "EVAL_PGD", "METRIC", "OUSettings", "PIXEL_REFERENCE_GAUSSIAN",
           "PIXEL_REFERENCE_PGD", "REFERENCE_GAUSSIAN", "REFERENCE_PGD", "SETS", "forget_mask",
           "ou_at_eps", "ou_divergence", "ou_metrics", "ou_sets", "over_unlearning"]
