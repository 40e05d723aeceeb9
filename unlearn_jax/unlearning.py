"""Unlearning one model: build a method's plan from only the data it declares, run it, time it.

``unlearn`` is the single entry point the runner, the CLI and users call; it enforces each
method's declared data access (a method that does not read D_r never receives it).
"""

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from unlearn_jax import seeding
from unlearn_jax.checkpoint import Checkpointer
from unlearn_jax.data.splits import Splits, splits_from_arrays
from unlearn_jax.methods import Method, Original, get_method, method_data
from unlearn_jax.training.execute import execute_plan
from unlearn_jax.training.loop import Hook
from unlearn_jax.training.state import create_train_state


@dataclasses.dataclass(frozen=True)
class UnlearnResult:
  """The unlearned model, its logged metrics, its wall time and the method's info numbers."""

  params: Any
  model_state: Any
  history: list[dict]
  # Wall time of the unlearning alone (plan building, compilation, steps, finalize), summed over
  # the legs of a resumed run.
  seconds: float
  info: dict


def unlearn(
    method: str | Method,
    original: Original,
    splits: Splits | None = None,
    *,
    forget=None,
    retain=None,
    forget_classes: Sequence[int] = (),
    seed: int,
    hparams: Mapping[str, Any] | None = None,
    profile: str = "small",
    mesh: jax.sharding.Mesh | None = None,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 0,
    run_key: str = "",
    hooks: Sequence[Hook] = (),
    progress: bool = False,
    teacher: tuple[Any, Any] | None = None,
) -> UnlearnResult:
  """Runs ``method`` from ``original`` on ``splits`` (or on ``forget`` / ``retain``) and
  returns the unlearned model.

  Args:
    method: a registered name or a :class:`Method`.
    original: θ_o, never modified.
    splits: D_f, D_r and the forgotten classes, e.g. from
      :func:`~unlearn_jax.data.splits.make_splits`; or, instead:
    forget, retain: D_f and D_r as :class:`ArrayDataset` or ``(images, labels)`` (``retain``
      only for a method that reads it), with ``forget_classes`` for class unlearning.
    seed: every random choice of the method derives from it.
    hparams: overrides of the ``profile``'s hyper-parameters (checked by key and type), or
      the method's :class:`~unlearn_jax.methods.HParams`.
    checkpointer: saves the running state every ``checkpoint_every`` steps; a checkpoint of the
      same ``run_key`` found there is resumed (ending bit-identical to an uninterrupted run), one
      of another ``run_key`` is a ValueError (a directory holds one run).
    hooks: evaluation callbacks ``fn(step, state) -> dict`` every ``every`` steps.
    progress: draw a progress bar.
    teacher: ``(params, model_state)`` of the plan's teacher "original" when it is not the start
      point ``original`` (θ_o as teacher in a sequence's later request, docs/math.md §6.9).

  Raises:
    ValueError: both or neither of ``splits`` and ``forget``, sets that
      :func:`~unlearn_jax.data.splits.splits_from_arrays` refuses, a set the method reads and
      was not given, bad hyper-parameters or seed.
  """
  method = get_method(method) if isinstance(method, str) else method
  if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
    raise ValueError(f"seed: {seed!r} is a {type(seed).__name__}; expected an int.")
  if (splits is None) == (forget is None) or (splits is not None and (
      retain is not None or forget_classes)):
    raise ValueError("splits/forget: give splits (a Splits) or forget= (with retain= and "
                     "forget_classes= as the method needs), not both and not neither.")
  if splits is None:
    splits = splits_from_arrays(forget, retain, num_classes=original.model.num_classes,
                                forget_classes=forget_classes)
  hp = method.hparams(profile, hparams)
  given_retain = splits.retain if retain is not None or forget is None else None
  data = method_data(method, splits.forget, given_retain, splits.forget_classes,
                     splits.dataset.num_classes)
  start = time.perf_counter()
  plan = method.build(hp, original, data, seed)
  if teacher is not None and "original" in plan.teachers:
    plan = dataclasses.replace(plan, teachers={**plan.teachers, "original": teacher})
  state, save, before = None, None, 0.0  # before: seconds of the legs a resumed run already ran
  if checkpointer is not None:
    meta = checkpointer.meta()
    if meta and meta.get("run") != run_key:
      raise ValueError(f"checkpointer: {checkpointer.directory} holds the steps of run "
                       f"{meta.get('run')!r}, not {run_key!r}; use a directory per run_key "
                       "(or delete it).")
    if meta:
      state = checkpointer.restore(jax.eval_shape(
          lambda: create_train_state(plan.params, plan.model_state, plan.tx)))
      before = meta.get("seconds", 0.0)

    def save(step, st):
      checkpointer.save(step, st, {"run": run_key, "method": method.name,
                                   "seconds": before + time.perf_counter() - start})

  final, history = execute_plan(plan, key=seeding.device_key(seed, method.name, "steps"),
                                mesh=mesh, state=state, checkpoint=save,
                                checkpoint_every=checkpoint_every, hooks=hooks, progress=progress,
                                desc=method.name)
  params, model_state = final.params, final.model_state
  if plan.finalize is not None:
    params, model_state = plan.finalize(params, model_state)
  params, model_state = jax.block_until_ready(jax.device_get((params, model_state)))
  return UnlearnResult(params, model_state, history, before + time.perf_counter() - start,
                       dict(plan.info))
