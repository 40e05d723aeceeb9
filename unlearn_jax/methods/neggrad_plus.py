"""NegGrad+ (Kurmanji et al., 2023; docs/math.md §5.4): minimise β·CE(D_r) − (1−β)·CE(D_f)
on paired batches (D_f cycled under D_r's epochs), optionally until Acc(D_f) ≤ a target."""

from unlearn_jax.methods.common import SGD, forget_accuracy_at_most, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


@register("neggrad_plus", reads=("forget", "retain"),
          description="Minimise β·CE(D_r) − (1−β)·CE(D_f) on paired batches (forget cycled); "
                      "optional early stop once D_f accuracy ≤ stop_forget_accuracy.",
          defaults={**SGD, "learning_rate": 0.005, "epochs": 10, "batch_size": 64, "beta": 0.99,
                    "stop_forget_accuracy": 5.0},
          profiles={"resnet18": {"learning_rate": 0.01, "batch_size": 256, "beta": 0.95,
                                 "stop_forget_accuracy": None},
                    "fashion_mnist": {"epochs": 2, "batch_size": 128}})
def neggrad_plus(hp, original, data, seed) -> Plan:
  """``epochs`` over D_r with a D_f batch beside every D_r batch."""
  sets = {s: Data(data.require(s, "neggrad_plus"), hp.batch_size) for s in ("retain", "forget")}
  objective = {"ce": terms.cross_entropy("retain"), "neg_ce": terms.negated_cross_entropy("forget")}
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, sets["retain"].steps_per_epoch), sets,
              [Block("neggrad_plus", objective, epochs=hp.epochs, driver="retain")],
              {"ce": hp.beta, "neg_ce": 1.0 - hp.beta}, seed,
              stop=forget_accuracy_at_most(original.model, sets["forget"].examples,
                                           hp.stop_forget_accuracy))
