"""Tables and plots from an experiment's results JSON (``unlearn-jax report RUN_DIR``).

Everything here reads the JSON only, so a finished run's report can be regenerated at any time:
the table's columns are the ones the run recorded (``results["columns"]``, else the registry's);
the plots are the feature projections and each registered metric's ``plot``.
"""

import pathlib

import numpy as np

from unlearn_jax import summaries
from unlearn_jax.checkpoint import read_json, write_atomic
from unlearn_jax.evaluation import registry, suite

TIME_COLUMN = ("Time (s)", "seconds", ".1f")
FEATURE_MODELS = ("original", "retrain", "ft", "ga", "spotter", "opc")


def _cell(value, fmt: str) -> str:
  """A results value (one trial's, or the aggregate's {"mean", "std", "values"}) as the
  summaries' :func:`~unlearn_jax.summaries.cell` writes it (mean ± std, or a "t:" column's
  t-interval)."""
  if isinstance(value, dict) and "mean" not in value:  # words, one per trial
    return " / ".join(_cell(v, fmt) for v in value["values"])
  return summaries.cell(value["values"] if isinstance(value, dict) else [value], fmt)


def columns(settings=None) -> tuple[tuple[str, str, str], ...]:
  """(header, metric key, format) of the results table: the suite's and every registered
  metric's columns (:func:`unlearn_jax.evaluation.suite.columns`; ``settings``: the run's
  evaluation settings, which may add columns), then the wall time."""
  return (*suite.columns(settings), TIME_COLUMN)


def markdown_table(rows: dict[str, dict], table_columns=None) -> str:
  """Rows = models (Original, Retrain, methods), columns = ``table_columns`` (default
  :func:`columns`)."""
  table_columns = table_columns or columns()
  lines = ["| Method | " + " | ".join(h for h, _, _ in table_columns) + " |",
           "|---" * (len(table_columns) + 1) + "|"]
  for name, metrics in rows.items():
    cells = [_cell(metrics.get(key), fmt) for _, key, fmt in table_columns]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _plot_features(models: dict, path: pathlib.Path) -> None:
  from matplotlib.figure import Figure

  names = [n for n in FEATURE_MODELS if n in models and "projection" in models[n]["details"]]
  if not names:
    return
  fig = Figure(figsize=(3.2 * len(names), 3.2))
  axes = fig.subplots(1, len(names), squeeze=False)
  for ax, name in zip(axes[0], names, strict=True):
    proj = models[name]["details"]["projection"]
    kept = np.asarray(proj["test_retain"]["xy"])
    forget = np.asarray(proj["forget"]["xy"])
    ax.scatter(kept[:, 0], kept[:, 1], s=4, c=proj["test_retain"]["label"], cmap="tab10",
               alpha=0.5)
    ax.scatter(forget[:, 0], forget[:, 1], s=8, c="black", marker="x", label="forget")
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0][0].legend(loc="best", fontsize=7)
  fig.suptitle("Penultimate features, 2-D PCA (× = forget set, colours = kept test classes)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def write_report(results: dict, out: pathlib.Path) -> None:
  """Writes ``results.md`` and the PNG plots under ``out``."""
  out = pathlib.Path(out)
  models = results["models"]
  rows = {n: m["metrics"] for n, m in models.items()}
  trials = isinstance(results["seed"], list)
  header = (f"# {results['config']['name']}\n\n"
            + (f"mean ± std over {len(results['seed'])} trials, " if trials else "")
            + f"seed {results['seed']}; forget classes "
            f"{results['forget_classes'] or 'none (random forgetting)'}; split sizes "
            f"{results['splits']}; {results['hardware']['processor']}, "
            f"{len(results['hardware']['devices'])} {results['hardware']['backend']} device(s); "
            f"wall time {results.get('wall_seconds', float('nan')):.0f} s.\n\n")
  write_atomic(out / "results.md", header + markdown_table(rows, results.get("columns")))
  _plot_features(models, out / "features.png")
  for metric in registry.metrics():
    if metric.plot:
      name, plot = metric.plot
      plot(models, out / name)


def report_from_dir(run_dir: str | pathlib.Path) -> dict:
  """Regenerates the table and plots of a finished run from its ``results.json``.

  Raises:
    FileNotFoundError: no results.json in ``run_dir``.
    ValueError: results.json is damaged (names it and how to rewrite it).
  """
  path = pathlib.Path(run_dir) / "results.json"
  if not path.exists():
    raise FileNotFoundError(f"report: no results.json in {run_dir} (run the experiment first).")
  results = read_json(path, "run the experiment again to rewrite it (finished models and "
                             "methods are reused from the cache)")
  if "protocol" in results:  # a population experiment's results
    from unlearn_jax.population_report import write_population_report
    write_population_report(results, path.parent)
  else:
    write_report(results, path.parent)
  return results
