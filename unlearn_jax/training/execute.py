"""Runs a method's :class:`~unlearn_jax.methods.base.Plan`: one model over a mesh, or many as one
vmapped program (a population) whose model axis is split over the mesh.

Every phase compiles once (its step is reused by all of its blocks). Each batch carries
``progress`` = t/T for schedules inside objectives (ℓ1-sparse).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.methods.base import Block, Phase, Plan
from unlearn_jax.training import sharding
from unlearn_jax.training.loop import Hook, Segment, StopRule, run_plan
from unlearn_jax.training.state import TrainState, create_train_state
from unlearn_jax.training.step import make_train_step, split_step


def _with_progress(block: Block, offset: int, total: int):
  return lambda i: {**block.batch_fn(i), "progress": np.float32((offset + i) / max(total, 1))}


def _segments(blocks: Sequence[Block], steps: dict, batch_fn_of) -> list[Segment]:
  total = sum(b.num_steps for b in blocks)
  segments, offset = [], 0
  for b in blocks:
    skip = b.skip and (lambda st, b=b: b.skip(st.params, st.model_state))
    segments.append(Segment(b.phase.name, steps[id(b.phase)], b.num_steps,
                            batch_fn_of(b, offset, total), skip))
    offset += b.num_steps
  return segments


def phase_step(ph: Phase, tx, mesh: jax.sharding.Mesh, *, split_streams: bool | None = None):
  """The compiled step of a phase over ``mesh``, its state donated.

  ``split_streams``: a phase whose objective reads several streams steps each stream's gradient
  as its own program, then one update (``Phase.parts``; the same gradient up to float
  reassociation). None: on CPU only, where one program over all streams outgrows the cache and
  runs up to 1.7× slower (docs/performance.md); accelerators run one program.
  """
  if split_streams is None:
    split_streams = jax.default_backend() == "cpu"
  if split_streams and ph.parts:
    return split_step(ph.parts, tx, lambda apply: sharding.jit_sharded(apply, mesh))
  return sharding.jit_sharded(make_train_step(ph.objective, tx), mesh)


def execute_plan(
    plan: Plan,
    *,
    key: jax.Array,
    mesh: jax.sharding.Mesh | None = None,
    state: TrainState | None = None,
    checkpoint=None,
    checkpoint_every: int = 0,
    hooks: Sequence[Hook] = (),
    progress: bool = True,
    desc: str = "train",
    split_streams: bool | None = None,
) -> tuple[TrainState, list[dict]]:
  """Runs ``plan`` from its start (or from a restored ``state``) with the batch split over
  ``mesh`` (default: all devices). Randomness: ``fold_in(key, step)`` per step.

  ``split_streams``: see :func:`phase_step`.
  """
  mesh = mesh or sharding.make_mesh()
  state = state or create_train_state(plan.params, plan.model_state, plan.tx)
  # A fresh copy: the step donates the state, whose arrays may alias frozen (θ_o as teacher).
  state = jax.tree.map(jnp.copy, sharding.replicate(state, mesh))
  steps = {id(b.phase): phase_step(b.phase, plan.tx, mesh, split_streams=split_streams)
           for b in plan.blocks}
  segments = _segments(plan.blocks, steps, lambda b, o, t: _with_progress(b, o, t))
  stop = plan.stop and StopRule(plan.stop_every,
                                lambda _, st: plan.stop(st.params, st.model_state))
  return run_plan(segments, state, key=key, frozen=sharding.replicate(plan.frozen, mesh),
                  place_batch=lambda b: sharding.shard_leading(b, mesh), checkpoint=checkpoint,
                  checkpoint_every=checkpoint_every, hooks=hooks, stop=stop, progress=progress,
                  desc=desc)


def _check_same_structure(plans: Sequence[Plan]) -> None:
  def shape(p: Plan):
    return [(b.phase.name, b.num_steps) for b in p.blocks]

  first = shape(plans[0])
  for k, p in enumerate(plans[1:], 1):
    if shape(p) != first:
      raise ValueError(f"population: plan {k} has blocks {shape(p)[:3]}…, plan 0 has "
                       f"{first[:3]}…; a population's models must run the same steps (same data "
                       "sizes and hyper-parameters).")


def stack(trees):
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def execute_population(
    plans: Sequence[Plan],
    *,
    keys: jax.Array,
    mesh: jax.sharding.Mesh | None = None,
    state: TrainState | None = None,
    checkpoint=None,
    checkpoint_every: int = 0,
    progress: bool = True,
    desc: str = "population",
) -> tuple[TrainState, list[dict]]:
  """Runs K plans of identical structure as one ``vmap`` over (state, batch, key, frozen).

  The model axis is split over the mesh when the device count divides K in a one-process run,
  else replicated. The phases' objectives of ``plans[0]`` serve all models, so objectives must
  not close over per-model arrays (they read those from the batch and ``frozen``, which are
  stacked).

  Returns a state whose leaves lead with K; model k equals ``execute_plan(plans[k])`` up to
  float reassociation.
  """
  _check_same_structure(plans)
  if any(p.stop is not None or any(b.skip for b in p.blocks) for p in plans):
    raise ValueError("population: a plan with an early-stop or skip rule cannot be vmapped (each "
                     "model would stop at its own step); disable it, e.g. stop_forget_accuracy="
                     "None for ga, neggrad_plus or scrub.")
  mesh = mesh or sharding.make_mesh()
  # The host loop and the caller read every model's state, which a split over several processes
  # would leave partly on other hosts: replicate there instead.
  split = len(plans) % mesh.devices.size == 0 and jax.process_count() == 1

  def place(tree):
    if split:
      return sharding.shard_leading(tree, mesh, what="models")
    return sharding.replicate(tree, mesh)

  if state is None:
    state = stack([jax.device_get(create_train_state(p.params, p.model_state, p.tx))
                   for p in plans])
  state = jax.tree.map(jnp.copy, place(state))
  tx = plans[0].tx
  steps = {id(b.phase): sharding.jit_sharded(
      jax.vmap(make_train_step(b.phase.objective, tx)), mesh, split_state=split)
      for b in plans[0].blocks}
  block_lists = [p.blocks for p in plans]

  def batch_fn_of(block: Block, offset: int, total: int):
    k_index = plans[0].blocks.index(block)
    fns = [_with_progress(blocks[k_index], offset, total) for blocks in block_lists]
    return lambda i: stack([f(i) for f in fns])

  segments = _segments(plans[0].blocks, steps, batch_fn_of)
  return run_plan(segments, state, key=place(keys), frozen=place(stack(
      [jax.device_get(p.frozen) for p in plans])), place_batch=place, checkpoint=checkpoint,
      checkpoint_every=checkpoint_every, progress=progress, desc=desc)
