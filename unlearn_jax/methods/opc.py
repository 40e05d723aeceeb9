"""One-point contraction, OPC (Jung et al., 2025; docs/math.md §3.1).

L(θ) = E_{(x,y)∈D_r} CE(h_θ(x), y) + λ·E_{x∈D_f} ‖r_θ(x)‖₂ (or ‖·‖₂²): contract forget
representations to the origin ("deep forgetting"). Both readings of the paper are switches:
``representation`` ∈ {logits (ICLR version, default), features (arXiv wording)} and ``squared``.
One retain batch and one forget batch per step; ``driver`` says whose epochs count.
"""

from unlearn_jax.methods.common import optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


@register("opc", reads=("forget", "retain"),
          description="Retain CE + λ·‖forget logits (or features)‖: contraction to one point.",
          defaults={"optimizer": "sgd", "learning_rate": 0.02, "momentum": 0.9,
                    "weight_decay": 5e-4, "epochs": 10, "batch_size": 64, "lam": 1.0,
                    "representation": "logits", "squared": False, "driver": "retain"},
          profiles={"resnet18": {"learning_rate": 0.01, "batch_size": 256, "driver": "forget"},
                    "fashion_mnist": {"epochs": 2, "batch_size": 128}})
def opc(hp, original, data, seed) -> Plan:
  """OPC's plan: ``epochs`` over the driver set, the other zipped alongside."""
  if hp.driver not in ("forget", "retain"):
    raise ValueError(f"opc.driver: {hp.driver!r}; allowed: forget, retain.")
  sets = {s: Data(data.require(s, "opc"), hp.batch_size) for s in ("forget", "retain")}
  objective = {"ce": terms.cross_entropy("retain"),
               "contraction": terms.contraction("forget", representation=hp.representation,
                                                squared=hp.squared)}
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets[hp.driver].steps_per_epoch), sets,
              [Block("opc", objective, epochs=hp.epochs, driver=hp.driver)],
              {"ce": 1.0, "contraction": hp.lam}, seed)
