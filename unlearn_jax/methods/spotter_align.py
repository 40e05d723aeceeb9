"""Spotter + retain CE + alignment of forget features with kept-class prototypes: a method built
to close both blind spots (output-level over-unlearning and representation-level residuals).

L(θ) = E_{D_r} CE(h_θ(x), y) + λ₃·E_{x∈D_f} ‖f_θ(x) − t(x)‖² / ‖t(x)‖² + L_Spotter,
t(x) = Σ_{c∉F} p̃_θo(c | x)·μ_c, μ_c = E_{x∈D_r, y=c} f_θo(x),

where p̃ is θ_o's softmax with the forget classes removed (Spotter's masked teacher) and μ_c the
kept classes' mean penultimate features under θ_o. A retrained model maps a forget image to the
kept classes it resembles; t(x) places its features there, so a prototype built from a few forget
images (PRA) or a linear map back to θ_o's features (FM) finds kept-class features rather than a
separate, dormant forget cluster. Spotter's masked KD on D_f and its neighbours keeps the outputs
near the boundary right (OU@ε); retain CE keeps RA/TA. Its hyper-parameters were tuned on
UA/RA/TA and the gap to Retrain only (docs/results.md), never on an attack.
"""

import jax
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.methods.common import SGD, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.methods.spotter import PGD, with_spotter
from unlearn_jax.objectives import terms
from unlearn_jax.objectives.losses import masked_softmax
from unlearn_jax.training.execute import teacher_outputs
from unlearn_jax.training.plan import Block, Data, Plan


def prototype_targets(original, forget, retain, forget_mask, *, per_class: int,
                      seed: int) -> np.ndarray:
  """t(x) = Σ_{c∉F} p̃_θo(c | x)·μ_c for every x in ``forget`` [N_f, d]; μ_c is the mean θ_o
  feature of up to ``per_class`` retained examples of class c, drawn with a key of ``seed``."""
  rng = seeding.host_rng(seed, "spotter_align_prototypes")
  kept = np.flatnonzero(~forget_mask)
  index = np.concatenate([rng.permutation(np.flatnonzero(retain.labels == c))[:per_class]
                          for c in kept])
  theta_o = (original.params, original.model_state)
  z = teacher_outputs(original.model, retain.subset(index), original=theta_o)["original/features"]
  means = np.zeros((len(forget_mask), z.shape[1]), np.float32)
  for c in kept:
    means[c] = z[retain.labels[index] == c].mean(0)
  logits = teacher_outputs(original.model, forget, original=theta_o)["original/logits"]
  p_tilde = np.asarray(jax.jit(masked_softmax)(logits, forget_mask))
  return (p_tilde @ means).astype(np.float32)


@register("spotter_align", reads=("forget", "retain"),
          description="Spotter + retain CE + forget features aligned with the masked teacher's "
                      "kept-class prototypes.",
          defaults={**SGD, "learning_rate": 0.003, "epochs": 10, "batch_size": 128,
                    "lambda1": 0.7, "lambda2": 1.0, "perturbation": PGD, "spotter_weight": 1.0,
                    "align_weight": 1.0, "prototype_examples": 256},
          profiles={"resnet18": {"batch_size": 256}, "fashion_mnist": {"learning_rate": 0.03}})
def spotter_align(hp, original, data, seed) -> Plan:
  """``epochs`` over D_f, D_r and Ã zipped alongside."""
  forget = data.require("forget", "spotter_align")
  retain = data.require("retain", "spotter_align")
  if hp.prototype_examples < 1:
    raise ValueError(f"spotter_align.prototype_examples: {hp.prototype_examples}; must be ≥ 1.")
  targets = prototype_targets(original, forget, retain, data.forget_mask,
                              per_class=hp.prototype_examples, seed=seed)
  sets = {"forget": Data(forget, hp.batch_size, extras={"target": targets}),
          "retain": Data(retain, hp.batch_size)}
  plan = Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets["forget"].steps_per_epoch), sets,
              [Block("spotter_align", {"ce": terms.cross_entropy("retain"),
                                       "align": terms.feature_target("forget")},
                     epochs=hp.epochs, driver="forget")],
              {"ce": 1.0, "align": hp.align_weight}, seed)
  return with_spotter(plan, hp, original, data, seed)
