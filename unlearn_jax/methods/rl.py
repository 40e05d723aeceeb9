"""Random labels, RL (docs/math.md §5.5), as in SalUn's code: each epoch one pass over D_f with
fresh uniformly random labels, then one pass over D_r with true labels, one optimiser throughout.
"""

from unlearn_jax.methods.common import SGD, optimizer
from unlearn_jax.methods.registry import register
from unlearn_jax.objectives import terms
from unlearn_jax.training.plan import Block, Data, Plan


def relabel_plan(name: str, hp, original, data, seed, *, mask=None) -> Plan:
  """RL's plan for method ``name``; ``mask`` (a {0, 1} pytree like the parameters) freezes the
  masked-out weights (SalUn)."""
  sets = {s: Data(data.require(s, name), hp.batch_size) for s in ("forget", "retain")}
  forget = Block("random_labels", {"rl": terms.random_label_cross_entropy("forget")})
  retain = Block("retain", {"ce": terms.cross_entropy("retain")})
  steps_per_epoch = sets["forget"].steps_per_epoch + sets["retain"].steps_per_epoch
  return Plan(original.model, original.params, original.model_state,
              optimizer(hp, steps_per_epoch, mask=mask), sets, [forget, retain] * hp.epochs,
              {"rl": 1.0, "ce": 1.0}, seed)


@register("rl", reads=("forget", "retain"),
          description="Random labels on D_f, then true labels on D_r, each epoch.",
          defaults={**SGD, "learning_rate": 0.02, "epochs": 10, "batch_size": 64},
          profiles={"resnet18": {"learning_rate": 0.01, "batch_size": 256},
                    "fashion_mnist": {"epochs": 2, "batch_size": 128}})
def rl(hp, original, data, seed) -> Plan:
  """RL's plan."""
  return relabel_plan("rl", hp, original, data, seed)
