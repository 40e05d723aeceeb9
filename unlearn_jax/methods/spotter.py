"""Spotter (Ha, Park & Yoon, ICML 2026; docs/math.md §2.3).

L(θ) = λ₁·KL(p̃_θo(x) ‖ p_θ(x)) on forget images + (1 − λ₁)·KL(p̃_θo(x̃) ‖ p_θ(x̃)) on perturbed
neighbours x̃ ∈ Ã + λ₂·L_disp(f_θ(x), y), where p̃ is the original model's softmax with the
forget classes removed and L_disp the mean same-class feature cosine. Reads D_f only (never
D_r); batch-norm running statistics stay frozen while its affine parameters train. Ã is built
once from θ_o (PGD or Gaussian, :mod:`unlearn_jax.perturbations`) from a key of the run's seed.

:func:`spotter_terms` are the plug-and-play terms: "Spotter + X" is ``{**spotter_terms(), **x}``,
with :func:`spotter_weights` and Spotter's own Ã from :func:`spotter_perturbed_set`.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.data.splits import as_dataset
from unlearn_jax.methods.common import optimizer
from unlearn_jax.methods.registry import Original, register
from unlearn_jax.objectives import Term, terms
from unlearn_jax.perturbations import PerturbationConfig, perturbed_set
from unlearn_jax.training.plan import Block, Data, Plan, driver


def spotter_terms() -> dict[str, Term]:
  """{"mkd": masked KD on forget, "mkd_near": masked KD on perturbed, "dispersion"}."""
  return {"mkd": terms.distillation("forget", masked=True),
          "mkd_near": terms.distillation("perturbed", masked=True),
          "dispersion": terms.dispersion("forget")}


def spotter_weights(lambda1: float, lambda2: float) -> dict[str, float]:
  """{"mkd": λ₁, "mkd_near": 1 − λ₁, "dispersion": λ₂}; λ₁ ∈ [0, 1]."""
  if not 0.0 <= lambda1 <= 1.0:
    raise ValueError(f"spotter.lambda1: {lambda1} not in [0, 1].")
  return {"mkd": lambda1, "mkd_near": 1.0 - lambda1, "dispersion": lambda2}


PGD = {"kind": "pgd", "mode": "targeted_boundary", "eps": 8 / 255, "step_size": 0.01,
       "num_steps": 3, "sigma": 0.01, "beta": None, "beta_quantile": None}


def spotter_perturbed_set(original: Original, forget, *, seed: int,
                          perturbation: Mapping[str, Any] = PGD) -> ArrayDataset:
  """Spotter's Ã: one perturbed copy of every image of D_f under θ_o, with the method's
  perturbation (``hparams.perturbation``, default :data:`PGD`) and its key
  ``device_key(seed, "spotter_perturbed")``: the set ``unlearn("spotter", …, seed=seed)`` trains
  on, for composing Spotter's terms into an objective of your own.

  Args:
    original: θ_o. forget: D_f, an :class:`ArrayDataset` or ``(images, labels)``.
    seed: the run's seed. perturbation: :class:`PerturbationConfig`'s fields.
  """
  return perturbed_set(original.model, original.params, original.model_state,
                       as_dataset(forget, "forget"), seeding.device_key(seed, "spotter_perturbed"),
                       PerturbationConfig(**perturbation))


@register("spotter", reads=("forget",),
          description="Masked KD from θ_o on D_f and its perturbed neighbours + intra-class "
                      "dispersion; no D_r.",
          defaults={"optimizer": "sgd", "learning_rate": 1e-4, "momentum": 0.9,
                    "weight_decay": 5e-4, "epochs": 10, "batch_size": 128, "lambda1": 0.7,
                    "lambda2": 1.0, "perturbation": PGD})
def spotter(hp, original, data, seed) -> Plan:
  """Spotter's plan: ``epochs`` over D_f, Ã zipped alongside."""
  forget = data.require("forget", "spotter")
  if not data.forget_classes:
    raise ValueError("spotter: class unlearning only (forget.classes); its masked teacher "
                     "removes whole classes.")
  near = spotter_perturbed_set(original, forget, seed=seed, perturbation=hp.perturbation)
  sets = {"forget": Data(forget, hp.batch_size), "perturbed": Data(near, hp.batch_size)}
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets["forget"].steps_per_epoch), sets,
              [Block("spotter", spotter_terms(), epochs=hp.epochs, driver="forget",
                     bn_train=False)],
              spotter_weights(hp.lambda1, hp.lambda2), seed,
              teachers={"original": (original.params, original.model_state)},
              forget_mask=data.forget_mask, info={"perturbed_examples": len(near)})


SPOTTER_HPARAMS = ("lambda1", "lambda2", "perturbation")


def with_spotter(plan: Plan, hp, original, data, seed) -> Plan:
  """``plan`` + Spotter's terms in every block: "X + Spotter", the paper's plug-and-play use.

  Each block minimises its own terms + w·(λ₁·KL_f + (1 − λ₁)·KL_Ã + λ₂·L_disp), w =
  ``hp.spotter_weight``, and keeps its driver (whose epochs count); D_f (if the plan lacks it)
  and Ã join its data in batches of the plan's first data set, θ_o its teachers, and the forget
  mask its context. ``hp`` holds the method's own values and :data:`SPOTTER_HPARAMS`.
  """
  forget = data.require("forget", "spotter (plug-in)")
  if not data.forget_classes:
    raise ValueError("spotter (plug-in): class unlearning only (forget.classes); its masked "
                     "teacher removes whole classes.")
  batch_size = next(iter(plan.data.values())).batch_size
  sets = {"forget": Data(forget, batch_size), **plan.data,
          "perturbed": Data(spotter_perturbed_set(original, forget, seed=seed,
                                                  perturbation=hp.perturbation), batch_size)}
  added = spotter_terms()
  blocks = [dataclasses.replace(b, terms={**b.terms, **added}, driver=driver(plan, b))
            for b in plan.blocks]
  weights = {**plan.weights, **{k: hp.spotter_weight * w for k, w in
                                spotter_weights(hp.lambda1, hp.lambda2).items()}}
  return dataclasses.replace(
      plan, data=sets, blocks=blocks, weights=weights,
      teachers={**plan.teachers, "original": (original.params, original.model_state)},
      forget_mask=data.forget_mask,
      info={**plan.info, "perturbed_examples": len(sets["perturbed"].examples)})
