"""Teacher–student baselines (papers.md §5): SCRUB and Bad Teacher.

* SCRUB (Kurmanji et al., 2023): student from θ_o, teacher θ_o frozen. Each epoch e: if
  e < msteps, a max pass over D_f minimising −T²·KL_T(teacher ‖ student); then a min pass over
  D_r minimising γ·CE + α·T²·KL_T(teacher ‖ student). One optimiser throughout. The max step is
  unbounded; with ``stop_forget_accuracy`` the remaining max steps (checked every 10) are skipped
  once Acc(D_f) ≤ that target, while the min passes still run.
* Bad Teacher (Chundawat et al., 2023): on D_f ∪ (a random fraction of D_r), minimise
  KL(u·softmax(t_bad/T) + (1−u)·softmax(t_good/T) ‖ softmax(s/T)), u = 1 on forget examples,
  t_bad a randomly initialised network.
"""

import numpy as np

from unlearn_jax import seeding
from unlearn_jax.data.batching import Stream
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods.base import (
  Method,
  Original,
  Plan,
  UnlearningData,
  epoch_blocks,
  forget_accuracy_at_most,
  frozen_context,
  optimizer,
  phase,
  register,
  teacher_outputs,
)
from unlearn_jax.objectives import terms


def _build_scrub(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  teacher = (original.params, original.model_state)
  forget, retain = (
      Stream(d, size, seed=seed, name=name,
             extras=teacher_outputs(original.model, d, original=teacher))
      for name, d, size in (("forget", data.require("forget", "scrub"), config.forget_batch_size),
                            ("retain", data.require("retain", "scrub"), config.batch_size)))
  T = config.temperature
  max_terms = {"neg_kd": terms.negated_distillation("forget", temperature=T)}
  min_terms = {"ce": terms.cross_entropy("retain"),
               "kd": terms.distillation("retain", temperature=T)}
  max_phase = phase("scrub_max", original.model, max_terms)
  min_phase = phase("scrub_min", original.model, min_terms)
  skip = forget_accuracy_at_most(original.model, forget.data, config.stop_forget_accuracy)
  blocks, epoch_starts, step = [], [], 0
  for e in range(config.epochs):
    epoch_starts.append(step)
    if e < config.msteps:
      blocks += epoch_blocks(max_phase, {"forget": forget}, "forget", [e], skip=skip,
                             chunk=10 if skip else None)
    blocks += epoch_blocks(min_phase, {"retain": retain}, "retain", [e])
    step = sum(b.num_steps for b in blocks)
  weights = {"neg_kd": 1.0, "ce": config.gamma, "kd": config.alpha}
  return Plan(original.model, original.params, original.model_state,
              optimizer(config, epoch_starts), tuple(blocks),
              frozen_context(original, data, weights, {**max_terms, **min_terms}))


register(Method(
    "scrub", frozenset({"forget", "retain"}), _build_scrub,
    {"resnet18": {"optimizer": "sgd", "learning_rate": 5e-4, "momentum": 0.9,
                  "weight_decay": 5e-4, "epochs": 3, "msteps": 2, "batch_size": 128,
                  "forget_batch_size": 32, "alpha": 0.001, "gamma": 0.99, "temperature": 4.0,
                  "decay": (), "stop_forget_accuracy": None},
     "small": {"optimizer": "sgd", "learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 5e-4,
               "epochs": 6, "msteps": 4, "batch_size": 64, "forget_batch_size": 32,
               "alpha": 0.5, "gamma": 1.0, "temperature": 2.0, "decay": (),
               "stop_forget_accuracy": None}},
    "Max steps away from θ_o on D_f, min steps toward θ_o (+CE) on D_r."))


def _build_bad_teacher(config, original: Original, data: UnlearningData, seed: int) -> Plan:
  forget = data.require("forget", "bad_teacher")
  retain = data.require("retain", "bad_teacher")
  if not 0.0 < config.retain_fraction <= 1.0:
    raise ValueError(f"bad_teacher.retain_fraction: {config.retain_fraction} not in (0, 1].")
  rng = seeding.host_rng(seed, "bad_teacher_retain")
  chosen = rng.choice(len(retain), size=max(1, int(round(config.retain_fraction * len(retain)))),
                      replace=False)
  mixed = ArrayDataset(np.concatenate([forget.images, retain.images[chosen]]),
                       np.concatenate([forget.labels, retain.labels[chosen]]))
  is_forget = np.concatenate([np.ones(len(forget)), np.zeros(len(chosen))]).astype(np.float32)
  bad = original.model.init(seeding.device_key(seed, "bad_teacher_init"))
  outputs = teacher_outputs(original.model, mixed, original=(original.params, original.model_state),
                            bad=bad)
  stream = Stream(mixed, config.batch_size, seed=seed, name="mixed",
                  extras={"is_forget": is_forget, **outputs})
  t = {"blend_kd": terms.blended_teacher_distillation("mixed", temperature=config.temperature)}
  blocks = epoch_blocks(phase("bad_teacher", original.model, t), {"mixed": stream}, "mixed",
                        range(config.epochs))
  return Plan(original.model, original.params, original.model_state,
              optimizer(config, stream.steps_per_epoch), tuple(blocks),
              frozen_context(original, data, {"blend_kd": 1.0}, t, bad=bad))


register(Method(
    "bad_teacher", frozenset({"forget", "retain"}), _build_bad_teacher,
    {"resnet18": {"optimizer": "adam", "learning_rate": 1e-4, "momentum": 0.0,
                  "weight_decay": 0.0, "epochs": 1, "batch_size": 256, "temperature": 1.0,
                  "retain_fraction": 0.3},
     "small": {"optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.0, "weight_decay": 0.0,
               "epochs": 5, "batch_size": 64, "temperature": 4.0, "retain_fraction": 0.3}},
    "Distil from θ_o on retained data and from a random network on forget data."))
