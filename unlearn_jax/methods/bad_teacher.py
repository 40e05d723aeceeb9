"""Bad Teacher (Chundawat et al., AAAI 2023; docs/math.md §5.10).

On D_f ∪ (a random fraction of D_r), minimise KL(u·softmax(t_bad/T) + (1−u)·softmax(t_good/T) ‖
softmax(s/T)), u = 1 on forget examples, t_good = θ_o, t_bad a randomly initialised network.
"""

import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.common import optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


@register("bad_teacher", reads=("forget", "retain"),
          description="Distil from θ_o on retained data and from a random network on forget data.",
          defaults={"optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.0,
                    "weight_decay": 0.0, "epochs": 5, "batch_size": 64, "temperature": 4.0,
                    "retain_fraction": 0.3},
          profiles={"resnet18": {"learning_rate": 1e-4, "epochs": 1, "batch_size": 256,
                                 "temperature": 1.0},
                    "fashion_mnist": {"batch_size": 128, "temperature": 1.0}})
def bad_teacher(hp, original, data, seed) -> Plan:
  """Bad Teacher's plan: ``epochs`` over the mixed set, both teachers frozen."""
  forget = data.require("forget", "bad_teacher")
  retain = data.require("retain", "bad_teacher")
  if not 0.0 < hp.retain_fraction <= 1.0:
    raise ValueError(f"bad_teacher.retain_fraction: {hp.retain_fraction} not in (0, 1].")
  rng = seeding.host_rng(seed, "bad_teacher_retain")
  chosen = rng.choice(len(retain), size=max(1, int(round(hp.retain_fraction * len(retain)))),
                      replace=False)
  mixed = ArrayDataset.concatenate([forget, retain.subset(chosen)])
  is_forget = np.concatenate([np.ones(len(forget)), np.zeros(len(chosen))]).astype(np.float32)
  sets = {"mixed": Data(mixed, hp.batch_size, extras={"is_forget": is_forget})}
  objective = {"blend_kd": terms.blended_teacher_distillation("mixed", temperature=hp.temperature)}
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets["mixed"].steps_per_epoch), sets,
              [Block("bad_teacher", objective, epochs=hp.epochs)], {"blend_kd": 1.0}, seed,
              teachers={"original": (original.params, original.model_state),
                        "bad": original.model.init(seeding.device_key(seed, "bad_teacher_init"))})
