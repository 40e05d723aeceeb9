"""Runs a :class:`~unlearn_jax.training.plan.Plan`: one model over a mesh, or K plans of one
structure as one vmapped program (a population) whose model axis is split over the mesh.

What a plan declares, the executor derives: the batches of each data set (a pure function of the
plan's seed, the set's name and the step), the outputs of frozen teachers on every data set that is
not augmented (computed once; a teacher is eval-mode, so its outputs are constants), a ``frozen``
context holding only what the terms read (weights, forget mask, teachers still needed in the
step), and one compiled step per block name. Each batch carries ``progress`` = t/T for schedules
inside objectives (ℓ1-sparse).
"""

import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unlearn_jax.data.batching import Stream, pad_index
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.models import Model, eval_forward
from unlearn_jax.objectives import make_frozen, make_objective, with_augmentation
from unlearn_jax.training import sharding
from unlearn_jax.training.loop import Hook, Segment, StopRule, run_plan
from unlearn_jax.training.plan import Block, Plan, block_steps, driver
from unlearn_jax.training.state import TrainState, create_train_state
from unlearn_jax.training.step import make_accumulate, make_apply, make_train_step

MAX_IN_FLIGHT = 3  # split steps dispatched before the host waits for the oldest


def teacher_outputs(model: Model, data: ArrayDataset, *, batch_size: int = 512,
                    **teachers: tuple[Any, Any]) -> dict[str, np.ndarray]:
  """Each teacher's eval-mode outputs on every example of ``data``, as batch extras
  ``{"<name>/features": [N, d], "<name>/logits": [N, C]}`` that
  :func:`~unlearn_jax.objectives.make_objective` reads instead of running the teacher.

  Args:
    teachers: name=(params, model_state).
  """
  out = {}
  for name, teacher in teachers.items():
    out[f"{name}/features"], out[f"{name}/logits"] = sharding.map_batches(
        eval_forward(model), data, batch_size=batch_size, replicated_args=teacher)
  return out


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A plan as the executor runs it: its streams, frozen context and (block, position) steps;
  ``on_device``: the data sets are in ``frozen["data"]`` and batches hold example numbers."""

  plan: Plan
  streams: Mapping[str, Stream]
  frozen: Mapping[str, Any]
  schedule: tuple[tuple[Block, int, int], ...]  # (block, first position, steps)
  on_device: bool = False

  def batch(self, block: Block, position: int, step: int, total: int) -> dict:
    """The batch of ``block`` at data ``position`` and global ``step`` of ``total``: each data
    set's rows (images as stored), or on the device path its ``index`` [B] (int32, padded with
    0) and ``mask``."""
    def rows(s):
      stream = self.streams[s]
      if not self.on_device:
        return stream.batch(position)
      index, mask = pad_index(stream.index(position), stream.batch_size)
      return {"index": index.astype(np.int32), "mask": mask}

    return {**{s: rows(s) for s in block.streams}, "progress": np.float32(step / max(total, 1))}


DEVICE_DATA_FRACTION = 0.25  # of the smallest device's memory, for the data sets of a plan


def data_fits_device(streams: Mapping[str, Stream], mesh: jax.sharding.Mesh) -> bool:
  """The device data path's default: on accelerators, when every data set of ``streams``
  (images as stored, labels, extras and teacher outputs; a whole copy per device) fits
  :data:`DEVICE_DATA_FRACTION` of the smallest device's memory. Never for data read by index
  (larger than memory), nor on CPU, where device memory is host memory and the host path is as
  fast (docs/performance.md)."""
  if jax.default_backend() == "cpu":
    return False
  if any(not isinstance(s.data.stored, np.ndarray) for s in streams.values()):
    return False
  limits = [(dev.memory_stats() or {}).get("bytes_limit") for dev in mesh.devices.flat]
  if None in limits:
    return False
  size = sum(s.data.stored.nbytes + s.data.labels.nbytes
             + sum(np.asarray(e).nbytes for e in s.extras.values()) for s in streams.values())
  return size <= DEVICE_DATA_FRACTION * min(limits)


def prepare(plan: Plan, *, on_device: bool | None = False,
            mesh: jax.sharding.Mesh | None = None) -> Prepared:
  """Streams with precomputed teacher outputs, the frozen context and the schedule of ``plan``;
  ``on_device``: the data sets go in ``frozen["data"]`` (the device data path; None: when
  :func:`data_fits_device` on ``mesh``)."""
  reads = {pair for b in plan.blocks for pair in b.teachers}
  in_step = {t for t, s in reads if plan.data[s].augment}
  streams = {}
  for name, d in plan.data.items():
    given = {t: plan.teachers[t] for t, s in sorted(reads) if s == name and not d.augment}
    extras = {**d.extras, **teacher_outputs(plan.model, d.examples, **given)} if given else d.extras
    streams[name] = Stream(d.examples, d.batch_size, seed=plan.seed, name=name, extras=extras,
                           stored=True)
  frozen = make_frozen(plan.weights, teachers={t: plan.teachers[t] for t in sorted(in_step)},
                       forget_mask=plan.forget_mask)
  if on_device is None:
    on_device = data_fits_device(streams, mesh or sharding.make_mesh())
  if on_device:
    frozen["data"] = {name: {"image": s.data.stored, "label": s.data.labels, **s.extras}
                      for name, s in streams.items()}
  positions: dict[str, int] = collections.Counter()
  schedule = []
  for block in plan.blocks:
    d, n = driver(plan, block), block_steps(plan, block)
    schedule.append((block, positions[d], n))
    positions[d] += n
  return Prepared(plan, streams, frozen, tuple(schedule), on_device)


def with_device_data(objective):
  """The objective given, for every data set in ``frozen["data"]``, the rows at its batch's
  ``index`` (gathered in the program: the device data path); other batches pass unchanged."""

  def gathered(params, model_state, batch, key, frozen):
    kept = frozen.get("data", {})
    batch = {s: ({k: v[b["index"]] for k, v in kept[s].items()} | {"mask": b["mask"]}
                 if s in kept else b) for s, b in batch.items()}
    return objective(params, model_state, batch, key, frozen)

  return gathered


def block_objective(plan: Plan, block: Block, streams=None):
  """The objective of ``block`` (only the terms reading ``streams`` when given), with the
  augmented data sets it reads cropped and flipped on device, reading kept data sets by index
  (:func:`with_device_data`)."""
  objective = make_objective(plan.model, block.terms, bn_train=block.bn_train, streams=streams)
  for s in block.streams:
    if plan.data[s].augment:
      objective = with_augmentation(objective, s)
  return with_device_data(objective)


def block_step(plan: Plan, block: Block, mesh: jax.sharding.Mesh, *,
               split_streams: bool | None = None):
  """The compiled step of ``block`` over ``mesh``, its state donated.

  ``split_streams``: a block reading several data sets steps each one's gradient as its own
  program, then one update (the same gradient up to float reassociation; the key and weight of
  every term as in the whole objective). None: on CPU only, where one program over all streams
  outgrows the cache and runs up to 1.7× slower (docs/performance.md); accelerators run one.
  """
  if split_streams is None:
    split_streams = jax.default_backend() == "cpu"
  if not (split_streams and len(block.streams) > 1):
    return sharding.jit_sharded(make_train_step(block_objective(plan, block), plan.tx), mesh)
  # Terms reading no data set (ℓ1) go with the first part.
  parts = [(block.streams[0], None), *((s,) for s in block.streams[1:])]
  accumulates = [jax.jit(make_accumulate(block_objective(plan, block, p))) for p in parts]
  apply = sharding.jit_sharded(make_apply(plan.tx), mesh)
  in_flight = collections.deque()

  def step(state: TrainState, batch, key: jax.Array, frozen) -> tuple[TrainState, dict]:
    # At most MAX_IN_FLIGHT steps dispatched ahead of the host: many unsynced programs with
    # collectives can deadlock XLA:CPU's host devices (design.md).
    if len(in_flight) >= MAX_IN_FLIGHT:
      jax.block_until_ready(in_flight.popleft())
    total, model_state = None, state.model_state
    for accumulate in accumulates:
      total, model_state = accumulate(state, total, model_state, batch, key, frozen)
    state, metrics = apply(state, total, model_state)
    in_flight.append(metrics["loss"])
    return state, metrics

  return step


def _unique(blocks: Sequence[Block]) -> dict[str, Block]:
  """The first block of every name (blocks of one name share one step)."""
  out: dict[str, Block] = {}
  for b in blocks:
    out.setdefault(b.name, b)
  return out


def _segments(prepared: Sequence[Prepared], steps: Mapping[str, Callable],
              stack: Callable[[list], Any]) -> list[Segment]:
  """The host loop's segments: one per block (per ``skip_every`` steps of a block with a skip
  rule), batches of every model stacked by ``stack``."""
  first = prepared[0]
  total = first.plan.num_steps
  segments, offset = [], 0
  for k, (block, position, n) in enumerate(first.schedule):
    chunk = block.skip_every or n or 1
    skip = block.skip and (lambda st, b=block: b.skip(st.params, st.model_state))
    for j in range(0, n, chunk):
      def batch_fn(i, k=k, start=offset + j, at=position + j):
        return stack([p.batch(p.schedule[k][0], at + i, start + i, total) for p in prepared])
      segments.append(Segment(block.name, steps[block.name], min(chunk, n - j), batch_fn, skip))
    offset += n
  return segments


def execute_plan(
    plan: Plan,
    *,
    key: jax.Array,
    mesh: jax.sharding.Mesh | None = None,
    state: TrainState | None = None,
    checkpoint=None,
    checkpoint_every: int = 0,
    hooks: Sequence[Hook] = (),
    progress: bool = False,
    desc: str = "train",
    split_streams: bool | None = None,
    data_on_device: bool | None = None,
) -> tuple[TrainState, list[dict]]:
  """Runs ``plan`` from its start (or from a restored ``state``) with the batch split over
  ``mesh`` (default: all devices). Randomness: ``fold_in(key, step)`` per step.

  ``split_streams``: the execution strategy of :func:`block_step` (None: by backend).
  ``data_on_device``: the device data path (None: :func:`data_fits_device`); both paths give
  bit-identical batches.
  """
  mesh = mesh or sharding.make_mesh()
  prepared = prepare(plan, on_device=data_on_device, mesh=mesh)
  state = state or create_train_state(plan.params, plan.model_state, plan.tx)
  # A fresh copy: the step donates the state, whose arrays may alias frozen (θ_o as teacher).
  state = jax.tree.map(jnp.copy, sharding.replicate(state, mesh))
  steps = {name: block_step(plan, b, mesh, split_streams=split_streams)
           for name, b in _unique(plan.blocks).items()}
  stop = plan.stop and StopRule(plan.stop_every,
                                lambda _, st: plan.stop(st.params, st.model_state))
  return run_plan(_segments([prepared], steps, lambda batches: batches[0]), state, key=key,
                  frozen=sharding.replicate(prepared.frozen, mesh),
                  place_batch=lambda b: sharding.shard_leading(b, mesh), checkpoint=checkpoint,
                  checkpoint_every=checkpoint_every, hooks=hooks, stop=stop, progress=progress,
                  desc=desc)


def check_population(plans: Sequence[Plan], desc: str = "population",
                     hint: str = "Disable it, e.g. stop_forget_accuracy=None for ga, "
                                 "neggrad_plus or scrub.", first: int = 0) -> None:
  """Raises ValueError unless ``plans`` can run as one vmapped program: no early-stop or skip
  rule (with ``hint``: the switch to turn), and the same blocks and step counts in every plan
  (model ``first + k`` is named)."""
  for p in plans:
    if p.stop is not None or any(b.skip is not None for b in p.blocks):
      raise ValueError(f"population '{desc}': a plan with an early-stop or skip rule cannot be "
                       f"vmapped (each model would stop at its own step). {hint}".strip())

  def steps(p: Plan):
    return [(b.name, block_steps(p, b)) for b in p.blocks]

  for k, p in enumerate(plans):
    if steps(p) != steps(plans[0]):
      raise ValueError(
          f"population '{desc}': model {first + k} runs {p.num_steps} steps ({steps(p)[:2]}…), "
          f"model {first} runs {plans[0].num_steps} ({steps(plans[0])[:2]}…); a vmapped "
          "population needs every model to run the same steps, so its per-model data sets "
          "must have equal sizes (balanced_masks gives them).")


def stack(trees):
  """Leaves of ``trees`` stacked on a new leading (model) axis, in NumPy."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def execute_population(
    plans: Sequence[Plan],
    *,
    keys: jax.Array,
    mesh: jax.sharding.Mesh | None = None,
    state: TrainState | None = None,
    checkpoint=None,
    checkpoint_every: int = 0,
    progress: bool = False,
    desc: str = "population",
) -> tuple[TrainState, list[dict]]:
  """Runs K plans of identical structure as one ``vmap`` over (state, batch, key, frozen).

  The model axis is split over the mesh when the device count divides K in a one-process run,
  else replicated. The blocks' objectives of ``plans[0]`` serve all models, so terms must not
  close over per-model arrays (they read those from the batch and ``frozen``, which are stacked).

  Returns a state whose leaves lead with K; model k equals ``execute_plan(plans[k])`` up to
  float reassociation.
  """
  check_population(plans, desc)
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
  first = plans[0]
  steps = {name: sharding.jit_sharded(
      jax.vmap(make_train_step(block_objective(first, b), first.tx)), mesh, split_state=split)
      for name, b in _unique(first.blocks).items()}
  prepared = [prepare(p) for p in plans]
  return run_plan(_segments(prepared, steps, stack), state, key=place(keys),
                  frozen=place(stack([jax.device_get(p.frozen) for p in prepared])),
                  place_batch=place, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  progress=progress, desc=desc)
