"""SCRUB (Kurmanji et al., NeurIPS 2023; docs/math.md §5.9): student from θ_o, teacher θ_o.

Each epoch e: if e < msteps, a max pass over D_f minimising −T²·KL_T(teacher ‖ student); then a
min pass over D_r minimising γ·CE + α·T²·KL_T(teacher ‖ student). One optimiser throughout. The
max step is unbounded; with ``stop_forget_accuracy`` the rest of a max pass (checked every 10
steps) is skipped once Acc(D_f) ≤ that target, while the min passes still run.
"""

from unlearn_jax.methods.common import SGD, forget_accuracy_at_most, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


@register("scrub", reads=("forget", "retain"),
          description="Max steps away from θ_o on D_f, min steps toward θ_o (+CE) on D_r.",
          defaults={**SGD, "learning_rate": 1e-3, "epochs": 6, "msteps": 4, "batch_size": 64,
                    "forget_batch_size": 32, "alpha": 0.5, "gamma": 1.0, "temperature": 2.0,
                    "decay": (), "stop_forget_accuracy": None},
          profiles={"resnet18": {"learning_rate": 5e-4, "epochs": 3, "msteps": 2,
                                 "batch_size": 128, "alpha": 0.001, "gamma": 0.99,
                                 "temperature": 4.0},
                    "fashion_mnist": {"learning_rate": 5e-4, "epochs": 3, "msteps": 2,
                                      "batch_size": 128, "stop_forget_accuracy": 5.0}})
def scrub(hp, original, data, seed) -> Plan:
  """SCRUB's plan: per epoch a max block on D_f (the first ``msteps``), then a min block on D_r."""
  sets = {"forget": Data(data.require("forget", "scrub"), hp.forget_batch_size),
          "retain": Data(data.require("retain", "scrub"), hp.batch_size)}
  skip = forget_accuracy_at_most(original.model, sets["forget"].examples,
                                 hp.stop_forget_accuracy)
  away = Block("scrub_max", {"neg_kd": terms.negated_distillation("forget",
                                                                  temperature=hp.temperature)},
               skip=skip, skip_every=10 if skip else None)
  toward = Block("scrub_min", {"ce": terms.cross_entropy("retain"),
                               "kd": terms.distillation("retain", temperature=hp.temperature)})
  steps = {away.name: sets["forget"].steps_per_epoch, toward.name: sets["retain"].steps_per_epoch}
  blocks, epoch_starts = [], []
  for e in range(hp.epochs):
    epoch_starts.append(sum(steps[b.name] for b in blocks))
    blocks += [away, toward] if e < hp.msteps else [toward]
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, epoch_starts), sets, blocks,
              {"neg_kd": 1.0, "ce": hp.gamma, "kd": hp.alpha}, seed,
              teachers={"original": (original.params, original.model_state)})
