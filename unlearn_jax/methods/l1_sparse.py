"""ℓ1-sparse unlearning (Jia et al., NeurIPS 2023; docs/math.md §5.7): FT on D_r plus
γ_t‖θ‖₁ with a linearly decaying γ_t = α(1 − t/T)."""

from unlearn_jax.methods.common import SGD, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


@register("l1_sparse", reads=("retain",), description="FT on D_r + γ_t‖θ‖₁, γ_t = α(1 − t/T).",
          defaults={**SGD, "learning_rate": 0.05, "epochs": 40, "batch_size": 64, "alpha": 1e-4},
          profiles={"resnet18": {"learning_rate": 0.01, "epochs": 10, "batch_size": 256,
                                 "alpha": 5e-4},
                    "fashion_mnist": {"epochs": 3, "batch_size": 128}})
def l1_sparse(hp, original, data, seed) -> Plan:
  """``epochs`` of CE on D_r + the decaying ℓ1 penalty."""
  sets = {"retain": Data(data.require("retain", "l1_sparse"), hp.batch_size)}
  objective = {"ce": terms.cross_entropy("retain"), "l1": terms.l1_penalty(decay="linear")}
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets["retain"].steps_per_epoch), sets,
              [Block("l1_sparse", objective, epochs=hp.epochs, driver="retain")],
              {"ce": 1.0, "l1": hp.alpha}, seed)
