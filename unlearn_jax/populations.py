"""Populations: K models trained or unlearned as one vmapped program (docs/math.md §7).

A population is K plans of identical structure (same phases, same step counts) that
:func:`unlearn_jax.training.execute.execute_population` runs as one ``vmap`` over (state, batch,
key, frozen), the model axis split over the devices of the mesh. This module builds those plans —
K classifiers from scratch, each on its own mask of a pool (originals on balanced halves, Retrain
oracles), or K unlearning runs of any registered method from one original or from K originals,
each on its own forget/retain masks — and runs them in chunks that fit in memory, with a progress
bar, an Orbax checkpoint per finished chunk, and resume (a rerun restores finished chunks, so it
ends identical without retraining them). A chunk whose size the device count does not divide is
padded with copies of its last model, which are dropped afterwards.

Training masks for population attacks come from
:func:`unlearn_jax.data.memberships.balanced_masks`. Model k of a population equals the same
model run alone (``train_classifier`` / ``unlearn``) up to float reassociation: its plan, seed
and key are the same.
"""

import dataclasses
import functools
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from unlearn_jax import seeding
from unlearn_jax.checkpoint import Checkpointer
from unlearn_jax.data.batching import pad_to_multiple
from unlearn_jax.data.datasets import ArrayDataset
from unlearn_jax.methods import HParams, Method, Original, get_method, method_data
from unlearn_jax.models import Model
from unlearn_jax.optim import Recipe
from unlearn_jax.training import sharding
from unlearn_jax.training.classifier import classifier_plan
from unlearn_jax.training.execute import check_population, execute_population, prepare
from unlearn_jax.training.plan import Plan
from unlearn_jax.training.state import create_train_state

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Population:
  """K models whose ``params`` / ``model_state`` leaves lead with K, with the seeds that made them.

  ``masks`` (bool [K, N]) are the pool examples each model trained on when it was trained on
  masks (:func:`train_population`), else None. ``seconds`` is the wall time of the chunks run
  (restored chunks count the time recorded when they ran).
  """

  model: Model
  params: Any
  model_state: Any
  seeds: tuple[int, ...]
  seconds: float
  masks: np.ndarray | None = None
  info: dict = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.seeds)

  def member(self, k: int) -> Original:
    """Model k as an :class:`Original` (unstacked)."""
    return Original(self.model, *jax.tree.map(lambda x: x[k], (self.params, self.model_state)))


def model_seeds(seed: int, count: int, *purpose: str | int) -> tuple[int, ...]:
  """``count`` distinct seeds in [0, 2³¹), a function of (``seed``, ``purpose``) alone."""
  rng = seeding.host_rng(seed, "population", *purpose)
  return tuple(int(s) for s in rng.choice(2**31 - 1, size=count, replace=False))


def _nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def model_bytes(plan: Plan) -> int:
  """Estimated bytes one model of a population holds while it trains: its train state (params ×
  the optimiser factor, e.g. 3 for Adam), frozen context (weights, masks, the teachers a step
  still runs), gradient and update (2 × params) and one batch. Activations are not counted
  (hence the budget's margin)."""
  state = jax.eval_shape(lambda: create_train_state(plan.params, plan.model_state, plan.tx))
  # The plan cut to one batch per data set: the same frozen context and batch shapes, without
  # computing teacher outputs over whole data sets.
  first = {name: dataclasses.replace(
      d, examples=d.examples.subset(np.arange(min(len(d.examples), d.batch_size))),
      extras={k: v[:d.batch_size] for k, v in d.extras.items()}) for name, d in plan.data.items()}
  prepared = prepare(dataclasses.replace(plan, data=first))
  batch = prepared.batch(plan.blocks[0], 0, 0, 1) if plan.blocks else {}
  return _nbytes(state) + _nbytes(prepared.frozen) + 2 * _nbytes(plan.params) + _nbytes(batch)


def default_budget(mesh: jax.sharding.Mesh) -> int:
  """Bytes a population chunk may use: 80% of the accelerators' memory (the model axis is split
  over them), or on CPU half of the host's available memory (its devices share it)."""
  stats = mesh.devices.flat[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(0.8 * stats["bytes_limit"]) * mesh.devices.size
  return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def chunk_models(count: int, devices: int, per_model: int, budget: int,
                 chunk_size: int | None = None) -> int:
  """Models per chunk: ``chunk_size`` if given, else as many as fit (a multiple of ``devices``,
  at most ``count`` rounded up to one).

  Raises:
    ValueError: the given chunk (padded to the device count) or one model per device does not fit
      in ``budget``; says which chunk size fits.
  """
  fits = budget // per_model // devices * devices
  what = (f"≈{per_model / GIB:.3g} GiB per model (train state = params × optimiser factor, "
          f"frozen context, gradients, a batch)")
  if chunk_size:
    need = pad_to_multiple(chunk_size, devices) * per_model
    if need > budget:
      hint = (f"chunk_size ≤ {fits} fits" if fits else
              f"not even {devices} model(s), one per device, fit")
      raise ValueError(f"population: a chunk of {chunk_size} models needs ≈{need / GIB:.3g} GiB "
                       f"({what}), more than the memory budget of {budget / GIB:.3g} GiB; "
                       f"{hint}.")
    return chunk_size
  if fits < devices:
    raise ValueError(f"population: {devices} model(s), one per device, need "
                     f"≈{devices * per_model / GIB:.3g} GiB ({what}), more than the memory "
                     f"budget of {budget / GIB:.3g} GiB; use a smaller model or more memory.")
  return min(pad_to_multiple(count, devices), fits)


def _shapes(plan: Plan):
  """Shapes of one model's final (params, model_state), after ``finalize``."""
  if plan.finalize is not None:
    return jax.eval_shape(plan.finalize, plan.params, plan.model_state)
  return jax.eval_shape(lambda: (plan.params, plan.model_state))


def run_population(build: Callable[[int], Plan], key_fn: Callable[[int], jax.Array], count: int,
                   *, desc: str, hint: str = "", chunk_size: int | None = None,
                   memory_budget: int | None = None,
                   checkpoint_dir: str | os.PathLike | None = None, run_key: str = "",
                   mesh: jax.sharding.Mesh | None = None,
                   progress: bool = False) -> tuple[Any, Any, float, dict]:
  """Runs the plans ``build(k)`` with keys ``key_fn(k)``, k < ``count``, chunk by chunk.

  Args:
    build: plan of model k (built chunk by chunk, so memory holds one chunk's plans).
    key_fn: step key of model k.
    desc: name in progress bars and messages.
    hint: appended to the error for a plan with an early-stop rule (the switch to turn).
    chunk_size: models per chunk (default: as many as fit in ``memory_budget``).
    memory_budget: bytes (default: :func:`default_budget`).
    checkpoint_dir: one Orbax checkpoint per finished chunk, restored on a rerun with the same
      ``run_key``.
    mesh: devices for the model axis (default: all).

  Returns:
    (params, model_state) with leaves [count, ...], the run's seconds, and info (chunk size,
    bytes per model, padded models, restored chunks).

  Raises:
    ValueError: an early-stop rule, plans of different structure, a chunk that does not fit (see
      :func:`chunk_models`), or a checkpoint directory holding another run.
  """
  mesh = mesh or sharding.make_mesh()
  devices = mesh.devices.size
  first = build(0)
  check_population([first], desc, hint)
  per_model = model_bytes(first)
  chunk = chunk_models(count, devices, per_model, memory_budget or default_budget(mesh),
                       chunk_size)
  shapes = _shapes(first)
  results, seconds, padded, restored = [], 0.0, 0, 0
  bar = tqdm(total=count, desc=desc, unit="model", disable=not progress)
  for start in range(0, count, chunk):
    stop = min(count, start + chunk)
    ckpt = (Checkpointer(pathlib.Path(checkpoint_dir) / f"models-{start:06d}-{stop:06d}")
            if checkpoint_dir is not None else None)
    meta = ckpt.meta() if ckpt is not None else None
    if meta is not None and meta.get("run") != run_key:
      raise ValueError(f"population '{desc}': {ckpt.directory} holds run {meta.get('run')!r}, "
                       f"not {run_key!r}; use another checkpoint directory.")
    if meta is not None:
      abstract = jax.tree.map(lambda s, n=stop - start: jax.ShapeDtypeStruct((n, *s.shape),
                                                                               s.dtype), shapes)
      result = ckpt.restore({"params": abstract[0], "model_state": abstract[1]})
      results.append((result["params"], result["model_state"]))
      seconds += meta["seconds"]
      restored += 1
    else:
      begin = time.perf_counter()
      plans = [first if k == 0 else build(k) for k in range(start, stop)]
      check_population(plans, desc, hint, first=start)
      pad = pad_to_multiple(len(plans), devices) - len(plans)
      padded += pad
      keys = jnp.stack([key_fn(k) for k in range(start, stop)] + [key_fn(stop - 1)] * pad)
      state, _ = execute_population(plans + [plans[-1]] * pad, keys=keys, mesh=mesh,
                                    progress=progress, desc=f"{desc} [{start}:{stop}]")
      params, model_state = jax.tree.map(lambda x, n=stop - start: np.asarray(x)[:n],
                                         jax.device_get((state.params, state.model_state)))
      if first.finalize is not None:
        finals = [p.finalize(*jax.tree.map(lambda x, k=k: x[k], (params, model_state)))
                  for k, p in enumerate(plans)]
        params, model_state = jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(finals))
      took = time.perf_counter() - begin
      seconds += took
      if ckpt is not None:
        ckpt.save(0, {"params": params, "model_state": model_state},
                  {"run": run_key, "models": [start, stop], "seconds": took})
        ckpt.wait()
      results.append((params, model_state))
    if ckpt is not None:
      ckpt.close()
    bar.update(stop - start)
  bar.close()
  params, model_state = jax.tree.map(lambda *xs: np.concatenate(xs), *results)
  return params, model_state, seconds, {"chunk_size": chunk, "bytes_per_model": per_model,
                                        "padded_models": padded, "restored_chunks": restored}


def _rows(masks, count: int, num_examples: int, field: str) -> np.ndarray:
  masks = np.asarray(masks, bool)
  if masks.shape != (count, num_examples):
    raise ValueError(f"{field}: shape {masks.shape}, expected ({count}, {num_examples}) = "
                     "(models, pool examples).")
  return masks


def train_population(model: Model, data: ArrayDataset, recipe: Recipe, *, seeds: Sequence[int],
                     masks: np.ndarray | None = None, **kwargs) -> Population:
  """K classifiers trained from scratch at once: originals on their halves of a pool, or Retrain
  oracles on D_r. Model k minimises E CE(h_θ(x), y) over ``data[masks[k]]`` (all of ``data``
  without masks) with init, order and key from ``seeds[k]``; it equals
  ``train_classifier(model, data.subset(masks[k]), recipe, seed=seeds[k])``.

  Args:
    masks: optional bool [K, N] over ``data``.
    **kwargs: to :func:`run_population` (chunk_size, memory_budget, checkpoint_dir, run_key,
      mesh, progress, desc).

  Raises:
    ValueError: masks not [K, N], or an empty or unequal-size training set.
  """
  seeds = tuple(int(s) for s in seeds)
  rows = None if masks is None else _rows(masks, len(seeds), len(data), "masks")

  def build(k: int) -> Plan:
    own = data if rows is None else data.subset(np.flatnonzero(rows[k]))
    return classifier_plan(model, own, recipe, seeds[k])

  params, model_state, seconds, info = run_population(
      build, lambda k: seeding.device_key(seeds[k], "steps"), len(seeds),
      **{"desc": f"train×{len(seeds)}", **kwargs})
  return Population(model, params, model_state, seeds, seconds, rows, info)


def stop_hint(method: Method, hp: HParams) -> str:
  """How to turn off ``method``'s early-stop rule: its non-None ``*stop*`` hyper-parameters."""
  switches = [k for k in hp if "stop" in k and hp[k] is not None]
  if not switches:
    return f"Method '{method.name}' cannot run as a population."
  return (f"Disable it: set {', '.join(f'{k}=None (now {hp[k]})' for k in switches)}, e.g. "
          f"--config.hparams.{method.name}.{switches[0]}=None.")


def unlearning_plan(method: Method, hp: HParams, original: Original, pool: ArrayDataset,
                    forget: np.ndarray, retain: np.ndarray, *, forget_classes: Sequence[int],
                    seed: int) -> Plan:
  """``method``'s plan from ``original`` on D_f = pool[forget], D_r = pool[retain] (bool [N]),
  the sets it does not read left out, as :func:`unlearn_jax.unlearning.unlearn` does."""
  data = method_data(method, pool.subset(np.flatnonzero(forget)),
                     pool.subset(np.flatnonzero(retain)), forget_classes,
                     original.model.num_classes)
  return method.build(hp, original, data, seed)


def unlearn_population(method: str | Method, originals: Original | Population, pool: ArrayDataset,
                       *, forget_masks: np.ndarray, retain_masks: np.ndarray,
                       seeds: Sequence[int], forget_classes: Sequence[int] = (),
                       hparams: Mapping[str, Any] | None = None, profile: str = "small",
                       **kwargs) -> Population:
  """K unlearning runs of a registered method at once; no per-method code.

  Model k starts from ``originals`` (one θ_o shared by all, or model k of a population) and runs
  the method's plan on D_f = ``pool[forget_masks[k]]``, D_r = ``pool[retain_masks[k]]`` (only
  the sets the method reads) with seed ``seeds[k]`` and key fold(seed, method, "steps"), as
  :func:`unlearn_jax.unlearning.unlearn` does for one model.

  Args:
    originals: the starting model(s); a population of K.
    pool: the examples the masks index.
    forget_masks, retain_masks: bool [K, N]; disjoint; inside each original's training mask when
      ``originals`` is a population trained on masks.
    forget_classes: class ids of class unlearning (metadata for the method).
    hparams: overrides of the method's ``profile`` hyper-parameters.
    **kwargs: to :func:`run_population`.

  Raises:
    ValueError: bad masks (naming the model), a method whose plan cannot be vmapped (an early-stop
      rule: names the switch; plans of different structure), or one that fails to build (e.g.
      a class-only method on a random forget set).
  """
  method = get_method(method) if isinstance(method, str) else method
  hp = method.hparams(profile, hparams)
  seeds = tuple(int(s) for s in seeds)
  count, n = len(seeds), len(pool)
  forget = _rows(forget_masks, count, n, "forget_masks")
  retain = _rows(retain_masks, count, n, "retain_masks")
  if (forget & retain).any():
    raise ValueError(f"forget_masks/retain_masks: model {np.argwhere(forget & retain)[0][0]} has "
                     "an example in both its forget and retain set.")
  if isinstance(originals, Population):
    if len(originals) != count:
      raise ValueError(f"originals: {len(originals)} models for {count} seeds.")
    if originals.masks is not None:
      outside = (forget | retain) & ~originals.masks
      if outside.any():
        m, x = np.argwhere(outside)[0]
        raise ValueError(f"forget_masks/retain_masks: model {m} would unlearn or keep pool "
                         f"example {x}, which is outside its training half "
                         f"({int(outside[m].sum())} such examples for that model).")
  def build(k: int) -> Plan:
    original = originals.member(k) if isinstance(originals, Population) else originals
    return unlearning_plan(method, hp, original, pool, forget[k], retain[k],
                           forget_classes=forget_classes, seed=seeds[k])

  params, model_state, seconds, info = run_population(
      build, lambda k: seeding.device_key(seeds[k], method.name, "steps"), count,
      **{"desc": f"{method.name}×{count}", "hint": stop_hint(method, hp), **kwargs})
  model = originals.model
  return Population(model, params, model_state, seeds, seconds, None, info)


@functools.cache
def _population_forward(model: Model):
  return jax.jit(jax.vmap(lambda p, s, x: model.apply(p, s, x)[1], in_axes=(0, 0, None)))


def population_logits(population: Population, data: ArrayDataset, *, batch_size: int = 256,
                      models_per_call: int = 64, mesh: jax.sharding.Mesh | None = None
                      ) -> np.ndarray:
  """Eval-mode logits of every model on every example, float32 [K, N, C]; the model axis is
  split over the mesh (padded to the device count)."""
  mesh = mesh or sharding.make_mesh()
  devices = mesh.devices.size
  forward = _population_forward(population.model)
  step = pad_to_multiple(min(models_per_call, len(population)), devices)
  images, out = data.images, []
  for start in range(0, len(population), step):
    index = np.minimum(np.arange(start, start + step), len(population) - 1)
    tree = jax.tree.map(lambda x, i=index: np.asarray(x)[i],
                        (population.params, population.model_state))
    params, model_state = sharding.shard_leading(tree, mesh, what="models")
    rows = [np.asarray(forward(params, model_state, images[b:b + batch_size]))
            for b in range(0, len(data), batch_size)]
    out.append(np.concatenate(rows, axis=1)[:min(step, len(population) - start)])
  return np.concatenate(out)


__all__ = ["Population", "chunk_models", "default_budget",
           "model_bytes", "model_seeds", "population_logits", "run_population", "stop_hint",
           "train_population", "unlearn_population", "unlearning_plan"]
