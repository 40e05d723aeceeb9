"""Relearning by fine-tuning on D_r alone (Siddiqui et al., 2025, "From Dormant to Deleted";
docs/math.md §6.5).

θ is fine-tuned with CE on batches of the retain set only, never a forget image, and forget
accuracy is measured along the way on D_f and D_t^f. A model that only suppressed the forget
set's outputs can get it back (the paper: from ≈50 % to ≈100 % on CIFAR-10 with zero forget
examples); Retrain θ_r must stay where it was. The protocol follows the reference code
(shoaibahmed/vision_relearning): Adam at a tenth of the original's learning rate (1e-5 against
1e-4 there; 1e-4 against 1e-3 here), no weight decay, a cosine schedule to a tenth of it, batch
128, 10 epochs. Here the steps are a setting: 100 steps are 10 epochs of digits' D_r; on
Fashion-MNIST's 54,000 retained images a bounded number of steps (the config's) is a fraction of
an epoch. The steps' batches are D_r's epochs in the seeded orders of a
:class:`~unlearn_jax.data.batching.Stream` named "relearn_retain" (the last batch of an epoch
padded with mask 0), the same for every model given the same seed.
"""

import dataclasses

from unlearn_jax import seeding
from unlearn_jax.data.batching import Stream
from unlearn_jax.data.splits import Splits
from unlearn_jax.evaluation import registry
from unlearn_jax.evaluation.relearning import check_finetune, finetune_curve
from unlearn_jax.models import Model

REFERENCE_STYLES = {"retrain": {"color": "black", "linestyle": "--", "linewidth": 2.0},
                    "original": {"color": "grey", "linestyle": ":", "linewidth": 2.0}}


def relearn_on_retain(model: Model, params, model_state, splits: Splits, *, seed: int,
                      steps: int = 100, batch_size: int = 128, eval_every: int = 10,
                      optimizer: str = "adam", learning_rate: float = 1e-4,
                      schedule: str = "cosine") -> dict:
  """Forget accuracy along T steps of CE fine-tuning on D_r alone (docs/math.md §6.5).

  Args:
    model, params, model_state: θ (θ_u, or θ_r as the reference).
    splits: the unlearning split.
    seed: the batches' order and the steps' key (the same for every model).
    steps: T. batch_size: B. eval_every: e (must divide T).
    optimizer, learning_rate, schedule: Adam, 1e-4 and "cosine" (to a tenth) by default.

  Returns:
    {"steps": [0, e, 2e, … T], "forget": Acc(D_f) in % after each, "test_forget": the same on
    D_t^f (None when D_t^f is empty: random forgetting), and the settings}.

  Raises:
    ValueError: an empty D_f or D_r, or an invalid option (the message names it).
  """
  check_finetune(optimizer=optimizer, schedule=schedule, steps=steps, eval_every=eval_every)
  for field, n in (("splits.forget", len(splits.forget)), ("splits.retain", len(splits.retain))):
    if n == 0:
      raise ValueError(f"{field}: the set is empty.")
  if batch_size < 1:
    raise ValueError(f"batch_size: {batch_size}; must be ≥ 1.")
  stream = Stream(splits.retain, batch_size, seed=seed, name="relearn_retain")
  names = ["forget"] + (["test_forget"] if len(splits.test_forget) else [])
  curves = finetune_curve(model, params, model_state, stream.batch, steps,
                          [getattr(splits, n) for n in names],
                          key=seeding.device_key(seed, "relearn_retain"), eval_every=eval_every,
                          optimizer=optimizer, learning_rate=learning_rate, schedule=schedule)
  out = {n: curves[:, i].tolist() for i, n in enumerate(names)}
  return {"steps": list(range(0, steps + 1, eval_every)), "forget": out["forget"],
          "test_forget": out.get("test_forget"), "batch_size": int(batch_size),
          "optimizer": optimizer, "learning_rate": float(learning_rate), "schedule": schedule,
          "seed": int(seed)}


@dataclasses.dataclass(frozen=True)
class RetainRelearnSettings(registry.Settings):
  """:func:`relearn_on_retain`'s options (``config.evaluation.relearn_retain.*``); off unless a
  config turns it on."""

  enabled: bool = False
  steps: int = 100
  batch_size: int = 128
  eval_every: int = 10
  optimizer: str = "adam"
  learning_rate: float = 1e-4
  schedule: str = "cosine"

  def __post_init__(self):
    check_finetune(optimizer=self.optimizer, schedule=self.schedule, steps=self.steps,
                   eval_every=self.eval_every, where="config.evaluation.relearn_retain.")


def _evaluate(model: Model, params, model_state, context, settings: RetainRelearnSettings, *,
              seed: int) -> tuple[dict, dict]:
  """"relearn_retain/forget" and ".../test_forget": accuracies after the T steps; details: the
  curves."""
  options = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
             if f.name != "enabled"}
  result = relearn_on_retain(model, params, model_state, context.splits, seed=seed, **options)
  final = {n: (result[n][-1] if result[n] is not None else None)
           for n in ("forget", "test_forget")}
  return ({f"relearn_retain/{n}": v for n, v in final.items()},
          {"relearn_retain": {k: result[k] for k in ("steps", "forget", "test_forget")}})


def plot_curve_panels(path, panels: dict, *, xlabel: str, title: str) -> None:
  """One panel per entry of ``panels`` ({y label: {model: (x, y)}}), one line per model,
  Retrain and the original in the :data:`REFERENCE_STYLES`, the methods in tab20 colours;
  nothing is drawn without a curve."""
  panels = {label: curves for label, curves in panels.items() if curves}
  if not panels:
    return
  from matplotlib import colormaps
  from matplotlib.figure import Figure

  fig = Figure(figsize=(4.8 * len(panels), 3.8))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (label, curves) in zip(axes[0], panels.items(), strict=True):
    colours = iter(colormaps["tab20"].colors * 2)
    for name, (x, y) in curves.items():
      style = REFERENCE_STYLES.get(name) or {"color": next(colours), "linewidth": 1.0}
      ax.plot(x, y, label=name, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label)
  axes[0][-1].legend(fontsize=6, ncol=2)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_relearn_retain(models: dict, path) -> None:
  """Forget accuracy against fine-tuning steps on D_r, one line per model, Retrain dashed: one
  panel for D_f, one for D_t^f (``details["relearn_retain"]``)."""
  runs = [(n, m["details"]["relearn_retain"]) for n, m in models.items()
          if "relearn_retain" in m.get("details", {})]
  plot_curve_panels(path, {
      f"accuracy on {label} (%)": {n: (r["steps"], r[key]) for n, r in runs if r[key] is not None}
      for key, label in (("forget", "D_f"), ("test_forget", "D_t^f"))},
      xlabel="fine-tuning steps on D_r",
      title="Relearning by fine-tuning on the retain set only (Retrain dashed)")


COLUMNS = (("FT(D_r) D_f", "relearn_retain/forget", ".1f"),)

METRIC = registry.register(registry.Metric(
    "relearn_retain", _evaluate, RetainRelearnSettings,
    plot=("relearn_retain.png", plot_relearn_retain), more_columns=lambda _: COLUMNS))


__all__ = ["COLUMNS", "METRIC", "REFERENCE_STYLES", "RetainRelearnSettings", "plot_curve_panels",
           "plot_relearn_retain", "relearn_on_retain"]
