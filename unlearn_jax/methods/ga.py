"""Gradient ascent, GA (docs/math.md §5.3): maximise the forget set's CE, −E_{D_f} CE, from θ_o,
optionally until Acc(D_f) ≤ ``stop_forget_accuracy`` (checked every step)."""

from unlearn_jax.methods.common import SGD, forget_accuracy_at_most, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


@register("ga", reads=("forget",),
          description="Gradient ascent on the forget set's CE (optionally until D_f accuracy ≤ "
                      "a target).",
          defaults={**SGD, "learning_rate": 1e-4, "epochs": 100, "batch_size": 16,
                    "stop_forget_accuracy": 5.0},
          profiles={"resnet18": {"epochs": 5, "batch_size": 256, "stop_forget_accuracy": None},
                    "fashion_mnist": {"epochs": 5, "batch_size": 32}})
def ga(hp, original, data, seed) -> Plan:
  """``epochs`` of −CE on D_f, with the stop rule."""
  forget = data.require("forget", "ga")
  sets = {"forget": Data(forget, hp.batch_size)}
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets["forget"].steps_per_epoch), sets,
              [Block("ga", {"ga": terms.negated_cross_entropy("forget")}, epochs=hp.epochs)],
              {"ga": 1.0}, seed,
              stop=forget_accuracy_at_most(original.model, forget, hp.stop_forget_accuracy))
