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


def _mean(value):
  return value.get("mean") if isinstance(value, dict) else value


def sequence_rows(requests: list[dict], key: str) -> dict[str, dict[str, object]]:
  """Model → {request index as str → metric ``key`` after that request} of a sequence."""
  return {name: {str(r): req["models"].get(name, {}).get("metrics", {}).get(key)
                 for r, req in enumerate(requests, start=1)} for name in requests[0]["models"]}


def sequence_tables(requests: list[dict]) -> str:
  """One markdown table per metric of :data:`~unlearn_jax.summaries.SEQUENCE_COLUMNS` that was
  measured: rows = models, columns = the requests (each evaluated on the cumulative forget set,
  UA req. on the request's own)."""
  request_columns = [f"after {r}" for r in range(1, len(requests) + 1)]
  parts = []
  for header, key, fmt in summaries.SEQUENCE_COLUMNS:
    rows = sequence_rows(requests, key)
    if all(v is None for values in rows.values() for v in values.values()):
      continue
    table = markdown_table(rows, [(h, str(r), fmt) for r, h in enumerate(request_columns, start=1)])
    parts.append(f"### {header}\n\n{table}")
  return "\n".join(parts)


def _plot_sequence(requests: list[dict], path: pathlib.Path) -> None:
  """UA, RA, TA and the Avg. Gap to Retrain against the request index, one line per model."""
  from matplotlib import colormaps
  from matplotlib.figure import Figure

  panels = [c for c in summaries.SEQUENCE_COLUMNS if c[1] in ("UA", "RA", "TA", "gap")]
  fig = Figure(figsize=(4.2 * len(panels), 3.6))
  axes = fig.subplots(1, len(panels), squeeze=False)
  x = np.arange(1, len(requests) + 1)
  colours = colormaps["tab20"]
  for ax, (header, key, _) in zip(axes[0], panels, strict=True):
    for k, (name, values) in enumerate(sequence_rows(requests, key).items()):
      y = [np.nan if (m := _mean(v)) is None else m for v in values.values()]
      style = ({"color": "black", "linestyle": "--", "linewidth": 2} if name == "retrain" else
               {"color": "grey", "linestyle": ":"} if name == "original" else
               {"color": colours(2 * k % 20 + k // 10 % 2)})  # dark shades, then light
      ax.plot(x, y, marker="o", markersize=3, label=name, **style)
    ax.set_title(header)
    ax.set_xlabel("request")
    ax.set_xticks(x)
  axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7)
  fig.suptitle("After each deletion request (cumulative forget set; Avg. Gap to Retrain on it)")
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
  table = markdown_table(rows, results.get("columns"))
  requests = results.get("requests")
  if requests:  # a sequence: the metrics across requests, then the last request's whole table
    table = (f"{len(requests)} sequential deletion requests ({_describe(requests)}), each "
             "applied to the model the previous one left; metrics on the cumulative forget set "
             "(UA req.: on the request's own examples).\n\n"
             f"{sequence_tables(requests)}\n### After request {len(requests)}\n\n{table}")
    _plot_sequence(requests, out / "sequence.png")
  write_atomic(out / "results.md", header + table)
  _plot_features(models, out / "features.png")
  for metric in registry.metrics():
    if metric.plot:
      name, plot = metric.plot
      plot(models, out / name)


def _describe(requests: list[dict]) -> str:
  """"classes 0, 3, 7" or "batches of 29, 29 examples"."""
  first = [r["request"] for r in requests]
  if first[0]["classes"]:
    return "classes " + ", ".join("+".join(map(str, r["classes"])) for r in first)
  return "batches of " + ", ".join(str(r["size"]) for r in first) + " examples"


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
