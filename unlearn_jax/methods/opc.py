"""One-point contraction, OPC (Jung et al., 2025; papers.md §3.3, §8.5).

L(θ) = E_{(x,y)∈D_r} CE(h_θ(x), y) + λ·E_{x∈D_f} ‖r_θ(x)‖₂ (or ‖·‖₂²): contract forget
representations to the origin ("deep forgetting"). Both readings of the paper are switches:
``representation`` ∈ {logits (ICLR version, default), features (arXiv wording)} and ``squared``.
One retain batch and one forget batch per step; ``driver`` says whose epochs count.
"""

from unlearn_jax.data.batching import Stream
from unlearn_jax.methods.base import (
  Method,
  Original,
  Plan,
  UnlearningData,
  epoch_blocks,
  frozen_context,
  optimizer,
  phase,
  register,
)
from unlearn_jax.objectives import terms


def _build(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  if config.driver not in ("forget", "retain"):
    raise ValueError(f"opc.driver: {config.driver!r}; allowed: forget, retain.")
  streams = {s: Stream(data.require(s, "opc"), config.batch_size, seed=seed, name=s)
             for s in ("forget", "retain")}
  t = {"ce": terms.cross_entropy("retain"),
       "contraction": terms.contraction("forget", representation=config.representation,
                                        squared=config.squared)}
  blocks = epoch_blocks(phase("opc", original.model, t), streams, config.driver,
                        range(config.epochs))
  return Plan(original.model, original.params, original.model_state,
              optimizer(config, streams[config.driver].steps_per_epoch), tuple(blocks),
              frozen_context(original, data, {"ce": 1.0, "contraction": config.lam}, t))


register(Method(
    "opc", frozenset({"forget", "retain"}), _build,
    {"resnet18": {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9,
                  "weight_decay": 5e-4, "epochs": 10, "batch_size": 256, "lam": 1.0,
                  "representation": "logits", "squared": False, "driver": "forget"},
     "small": {"optimizer": "sgd", "learning_rate": 0.02, "momentum": 0.9, "weight_decay": 5e-4,
               "epochs": 10, "batch_size": 64, "lam": 1.0, "representation": "logits",
               "squared": False, "driver": "retain"}},
    "Retain CE + λ·‖forget logits (or features)‖: contraction to one point."))
