"""Fine-tuning, FT (docs/math.md §5.2): minimise E_{D_r} CE from θ_o; the forget classes fade by
catastrophic forgetting."""

from unlearn_jax.methods.common import SGD, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


@register("ft", reads=("retain",),
          description="Fine-tune on D_r with CE from θ_o (catastrophic forgetting).",
          defaults={"optimizer": "adam", "learning_rate": 3e-3, "momentum": 0.0,
                    "weight_decay": 0.0, "epochs": 10, "batch_size": 64},
          profiles={"resnet18": {**SGD, "learning_rate": 0.01, "batch_size": 256},
                    "fashion_mnist": {"epochs": 2, "batch_size": 128}})
def ft(hp, original, data, seed) -> Plan:
  """``epochs`` of CE on D_r."""
  sets = {"retain": Data(data.require("retain", "ft"), hp.batch_size)}
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets["retain"].steps_per_epoch), sets,
              [Block("ft", {"ft": terms.cross_entropy("retain")}, epochs=hp.epochs)],
              {"ft": 1.0}, seed)
