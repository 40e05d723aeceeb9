"""The host loop: runs jitted steps over a plan of segments, with progress, NaN stop, hooks,
periodic checkpoints and exact resume.

A plan is a list of :class:`Segment` s (a method's epochs and phases, or an original model's
epochs). The global step number ``state.step`` says where a resumed run re-enters the plan; the
batches are a function of the step (see :class:`unlearn_jax.data.batching.Stream`) and the step's
randomness is ``fold_in(key, state.step)``, so a resumed run ends bit-identical.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from unlearn_jax.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class Segment:
  """``num_steps`` calls of ``step_fn`` on ``batch_fn(i)``, i = 0 … num_steps − 1; skipped
  (its steps counted, no update) when ``skip(state)`` is True at its start."""

  name: str
  step_fn: Callable  # jitted (state, batch, key, frozen) -> (state, metrics)
  num_steps: int
  batch_fn: Callable[[int], Any]
  skip: Callable[[TrainState], bool] | None = None


@dataclasses.dataclass(frozen=True)
class Hook:
  """Calls ``fn(step, state) -> dict of floats`` every ``every`` steps and at the end."""

  every: int
  fn: Callable[[int, TrainState], dict]


@dataclasses.dataclass(frozen=True)
class StopRule:
  """Ends the plan early when ``fn(step, state)`` is True, checked every ``every`` steps."""

  every: int
  fn: Callable[[int, TrainState], bool]


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite (the message names the step and the terms)."""


def _scalars(tree) -> dict[str, float]:
  return {k: float(np.mean(v)) for k, v in jax.device_get(tree).items()}


def run_plan(
    segments: Sequence[Segment],
    state: TrainState,
    *,
    key: jax.Array,
    frozen: Any,
    place_batch: Callable[[Any], Any] = lambda b: b,
    checkpoint: Callable[[int, TrainState], None] | None = None,
    checkpoint_every: int = 0,
    log_every: int = 10,
    hooks: Sequence[Hook] = (),
    stop: StopRule | None = None,
    progress: bool = False,
    desc: str = "train",
) -> tuple[TrainState, list[dict]]:
  """Runs the plan from ``state.step`` to its end (or until ``stop`` says so).

  Args:
    place_batch: puts a host batch on devices (e.g. sharded over a mesh).
    checkpoint: ``fn(step, state)`` called every ``checkpoint_every`` steps (not at the end: the
      caller saves the final state with its results).
    log_every: host sync interval: metrics are fetched, checked for NaN/inf and logged.

  Returns:
    The final state and the logged metrics (one dict per sync, with ``step``).

  Raises:
    NonFiniteLossError: the loss became NaN or infinite; names the first such step and the terms.
  """
  total = sum(s.num_steps for s in segments)
  start = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
  if start > total:
    raise ValueError(f"state.step {start} is past the end of the plan ({total} steps).")
  history: list[dict] = []
  losses: list[tuple[int, Any]] = []
  bar = tqdm(total=total, initial=start, desc=desc, disable=not progress, leave=False)
  offset, compiled = 0, set()
  for segment in segments:
    begin = max(0, start - offset)
    if begin == 0 and segment.skip is not None and segment.skip(state):
      state = state.replace(step=state.step + segment.num_steps)
      history.append({"step": offset + segment.num_steps, "skipped": segment.name})
      bar.update(segment.num_steps)
      offset += segment.num_steps
      continue
    for i in range(begin, segment.num_steps):
      if id(segment.step_fn) not in compiled:  # its first call compiles it
        bar.set_postfix_str("compiling…")
      state, metrics = segment.step_fn(state, place_batch(segment.batch_fn(i)), key, frozen)
      if id(segment.step_fn) not in compiled:
        compiled.add(id(segment.step_fn))
        bar.set_postfix_str("")
      step = offset + i + 1
      losses.append((step, metrics["loss"]))
      if step % log_every == 0 or step == total:
        fetched = jax.device_get([v for _, v in losses])
        for (s, _), loss in zip(losses, fetched, strict=True):
          if not math.isfinite(float(np.mean(loss))):
            terms = {k: v for k, v in _scalars(metrics).items() if k != "loss"}
            raise NonFiniteLossError(
                f"{desc}: the loss became {float(np.mean(loss))} at step {s} (segment "
                f"'{segment.name}'); last terms {terms}. Lower the learning rate or check "
                "the data.")
        losses.clear()
        record = {"step": step, "segment": segment.name, **_scalars(metrics)}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4g}")
      for hook in hooks:
        if step % hook.every == 0 or step == total:
          history.append({"step": step, **hook.fn(step, state)})
      bar.update(1)
      if stop is not None and step % stop.every == 0 and stop.fn(step, state):
        history.append({"step": step, "stopped_early": 1.0})
        bar.close()
        return state, history
      # After the stop rule: a checkpoint at the step where it fires would resume past the stop.
      if checkpoint and checkpoint_every and step % checkpoint_every == 0 and step < total:
        checkpoint(step, state)
    offset += segment.num_steps
  bar.close()
  return state, history
