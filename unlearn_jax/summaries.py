"""Run summaries: the compact, versioned record of a run that docs/results.md and docs/claims.md
are generated from (``summary.json`` beside a run's results.json; recorded copies in
``results/<experiment>.json``).

A summary is a pure function of a run's results (:func:`summarize`) with names of its own, so it
does not change when the code's internals do. Schema 1, top-level keys:

* ``schema`` (1), ``experiment`` (the config's name), ``kind`` ("protocol": one model per method,
  ``unlearn-jax run`` of an experiment config; "population": the challenge score, U-LiRA or the
  memorization strata, with ``protocol``).
* ``command``: what ``unlearn-jax`` was given (null for a run from Python); ``date``: UTC, ISO 8601.
* ``versions``, ``hardware``: as the run recorded them; ``config``: the whole config.
* ``seeds``: one per trial; ``forget_classes``: per trial, the forgotten (or target) classes, []
  for a random forget set; ``sizes``: per trial, the split (or pool, target set) sizes;
  ``wall_seconds``: the run's wall time over all trials (an experiment's: every model's training
  or unlearning time plus every evaluation's, kept with the results, so a resumed or repeated
  run reports the work's time, not its own).
* ``columns``: [{"header", "key", "format"}] of the run's table (``format`` a Python format spec).
* ``models``: name → {"metrics": key → [one value per trial], "hparams": the values the run used
  (null where none apply), "reads": the data sets the method reads, "info": [per trial]}.
* ``noise_floor``: per trial, Retrain-vs-Retrain mean and std of each representation score (or
  null); ``checks``: per trial, a population run's sanity checks (or null).
* ``tables``: further tables, name → {"title", "first", "columns", "rows": name → metrics}. A
  sequence of deletion requests (whose ``models`` are those after its last request) has
  ``request<r>`` (every column after request r) and ``requests/<metric key>`` (that metric after
  each request: columns "1", "2", …).

A metric value is a number, a string (a setting in words), null (not measured), or
{"mean", "std"}: a spread inside the trial (over a population's target models). Nothing larger is
kept: no per-example arrays, projections or checkpoints.
"""

import datetime
import json
import math
import pathlib
import shutil

import numpy as np
from scipy import stats

from unlearn_jax import population_report as pr
from unlearn_jax.checkpoint import read_json, write_atomic
from unlearn_jax.methods import METHODS

SCHEMA = 1
# A sequence's request: UA on its own examples D_f^(r) (UA is on the cumulative forget set).
REQUEST_COLUMN = ("UA req.", "UA/request", ".1f")
# What a sequence's tables (here and in the report) and plot follow across requests.
SEQUENCE_COLUMNS = (("UA", "UA", ".1f"), REQUEST_COLUMN, ("RA", "RA", ".1f"),
                    ("TA", "TA", ".1f"), ("MIA", "MIA", ".1f"), ("Avg. Gap", "gap", ".2f"),
                    ("ToW", "tow", "t:.3f"))
SUMMARY = "summary.json"
INTERVAL = "t:"  # a column format with this prefix shows mean ± 95 % t half-width over trials
RESULTS_DIR = "results"


def _spread(value) -> bool:
  return isinstance(value, dict) and bool(value) and set(value) <= {"mean", "std"}


def flatten(metrics: dict, prefix: str = "") -> dict:
  """Scalar metrics by dotted key; a {"mean", "std"} dict is one value, lists are left out.

  >>> flatten({"UA": 100.0, "u_lira": {"auc": {"mean": 0.5, "std": 0.1}, "targets": 64},
  ...          "epsilon": [1, 2]})
  {'UA': 100.0, 'u_lira.auc': {'mean': 0.5, 'std': 0.1}, 'u_lira.targets': 64}
  """
  out = {}
  for key, value in metrics.items():
    name = f"{prefix}{key}"
    if _spread(value):
      out[name] = {"mean": value.get("mean"), "std": value.get("std")}
    elif isinstance(value, dict):
      out |= flatten(value, name + ".")
    elif value is None or isinstance(value, bool | int | float | str):
      out[name] = value
  return out


def _by_trial(per_trial: list[dict]) -> dict[str, list]:
  """key → [value of each trial] (None where a trial lacks it), keys in first-seen order."""
  keys = list(dict.fromkeys(k for metrics in per_trial for k in metrics))
  return {k: [metrics.get(k) for metrics in per_trial] for k in keys}


def _scalars(info: dict | None) -> dict:
  return {k: v for k, v in (info or {}).items() if v is None or isinstance(v, bool | int | float)}


def _columns(columns) -> list[dict]:
  return [{"header": h, "key": k, "format": f} for h, k, f in columns]


def _reads(name: str):
  return sorted(METHODS[name].reads) if name in METHODS else None


def _now() -> str:
  return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarize(results: dict, *, trials: list[dict] | None = None, command: str | None = None,
              hparams: dict | None = None, date: str | None = None) -> dict:
  """The summary of a run's ``results`` (a runner's or a population runner's results dict).

  Args:
    results: the run's results.json content (for trials: the aggregate).
    trials: the per-trial results of a run with ``config.trials`` (default: ``[results]``).
    command: the CLI command that ran it. hparams: model name → the hyper-parameters it used.
    date: UTC time stamp (default: now).

  Returns:
    A JSON-able dict of the schema in this module's docstring.
  """
  common = {"schema": SCHEMA, "experiment": results["config"]["name"], "command": command,
            "date": date or _now(), "versions": results["versions"],
            "hardware": results["hardware"], "config": results["config"]}
  hparams = hparams or {}
  if "protocol" in results:
    return common | _population(results, hparams)
  trials = trials or [results]
  models = {}
  for name in trials[0]["models"]:
    rows = [t["models"].get(name, {}) for t in trials]
    models[name] = {"metrics": _rows(trials, name), "hparams": hparams.get(name),
                    "reads": _reads(name), "info": [_scalars(r.get("info")) for r in rows]}
  return common | {
      "kind": "protocol", "seeds": [t["seed"] for t in trials],
      "forget_classes": [list(t["forget_classes"]) for t in trials],
      "sizes": [t["splits"] for t in trials], "wall_seconds": results.get("wall_seconds"),
      "columns": _columns(results["columns"]), "models": models,
      "noise_floor": [t.get("noise_floor") for t in trials], "checks": None,
      "tables": _sequence_tables(trials) if "requests" in results else {}}


def _rows(trials: list[dict], name: str) -> dict[str, list]:
  """Model ``name``'s metrics by trial."""
  return _by_trial([flatten(t["models"].get(name, {}).get("metrics", {})) for t in trials])


def _sequence_tables(trials: list[dict]) -> dict:
  """A sequence's tables: every column after each request, and each measured metric of
  :data:`SEQUENCE_COLUMNS` across requests."""
  tables = {}
  for r, first in enumerate(trials[0]["requests"], start=1):
    at = [t["requests"][r - 1] for t in trials]
    what = (f"classes {first['request']['classes']}" if first["request"]["classes"] else
            f"{first['request']['size']} examples")
    tables[f"request{r}"] = {
        "title": f"After request {r} of {len(trials[0]['requests'])} ({what}; metrics on the "
                 "cumulative forget set)", "first": "Method",
        "columns": _columns(first["columns"]),
        "rows": {name: _rows(at, name) for name in first["models"]}}
  count = len(trials[0]["requests"])
  for header, key, fmt in SEQUENCE_COLUMNS:
    rows = {name: {str(r): tables[f"request{r}"]["rows"][name].get(key, [None] * len(trials))
                   for r in range(1, count + 1)} for name in tables["request1"]["rows"]}
    if any(present(values) for row in rows.values() for values in row.values()):
      tables[f"requests/{key}"] = {
          "title": f"{header} after each request", "first": "Method",
          "columns": [{"header": f"after {r}", "key": str(r), "format": fmt}
                      for r in range(1, count + 1)], "rows": rows}
  return tables


def _population(results: dict, hparams: dict) -> dict:
  config, rows = results["config"], results["rows"]
  models = {name: {"metrics": _by_trial([flatten(row["metrics"])]), "hparams": hparams.get(name),
                   "reads": _reads(name), "info": [_scalars(row.get("info"))]}
            for name, row in rows.items()}
  tables = {name: {"title": title, "first": first, "columns": _columns(columns),
                   "rows": {n: _by_trial([flatten(m)]) for n, m in table.items()}}
            for name, (title, first, columns, table) in pr.further_tables(results).items()}
  return {"kind": "population", "protocol": results["protocol"], "seeds": [results["seed"]],
          "forget_classes": [list(config["target"]["classes"])], "sizes": [results["sizes"]],
          "excluded": results.get("excluded", {}), "wall_seconds": results.get("wall_seconds"),
          "columns": _columns(pr.main_columns(results)), "models": models, "noise_floor": [None],
          "checks": [results.get("checks")], "tables": tables}


def write_summary(summary: dict, out: str | pathlib.Path) -> pathlib.Path:
  """Writes ``summary`` to ``out/summary.json`` (atomically); returns the path."""
  path = pathlib.Path(out) / SUMMARY
  write_atomic(path, dumps(summary))
  return path


def dumps(summary: dict) -> str:
  """The summary's JSON text: keys in the run's order (models as the table lists them), one-space
  indent, a final newline."""
  return json.dumps(summary, indent=1, ensure_ascii=False) + "\n"


def set_command(out: str | pathlib.Path, command: str) -> None:
  """Records ``command`` in ``out/summary.json`` (the CLI knows it; the runner does not)."""
  path = pathlib.Path(out) / SUMMARY
  summary = read_summary(path)
  summary["command"] = command
  write_atomic(path, dumps(summary))


def read_summary(path: str | pathlib.Path) -> dict:
  """A summary file, checked for its schema.

  Raises:
    FileNotFoundError: no such file. ValueError: damaged, or of another schema.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"summary: no {path}.")
  summary = read_json(path, "rerun the experiment (it reuses its cached results) to rewrite it")
  if summary.get("schema") != SCHEMA:
    raise ValueError(f"{path}: summary schema {summary.get('schema')!r}; this code reads "
                     f"schema {SCHEMA}.")
  return summary


def load_summaries(root: str | pathlib.Path) -> dict[str, dict]:
  """Every recorded summary ``root/results/*.json``, by experiment name (file stem)."""
  folder = pathlib.Path(root) / RESULTS_DIR
  return {p.stem: read_summary(p) for p in sorted(folder.glob("*.json"))}


def record(run_dir: str | pathlib.Path, root: str | pathlib.Path = ".") -> pathlib.Path:
  """Copies ``run_dir/summary.json`` to ``root/results/<experiment>.json``; returns that path.

  Raises:
    FileNotFoundError: no summary in ``run_dir`` (runs before summaries existed: rerun the
      command, which reuses every cached result and writes it).
    ValueError: a damaged summary or one of another schema.
  """
  source = pathlib.Path(run_dir) / SUMMARY
  if not source.exists():
    raise FileNotFoundError(f"record: no {SUMMARY} in {run_dir}; rerun its command (cached "
                            "models and results are reused) to write one.")
  summary = read_summary(source)
  target = pathlib.Path(root) / RESULTS_DIR / f"{summary['experiment']}.json"
  target.parent.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(source, target)
  return target


def absolute_paths(tree, where: str = "") -> list[str]:
  """Fields of ``tree`` whose string value is an absolute path (not to be committed)."""
  if isinstance(tree, dict):
    return [p for k, v in tree.items() for p in absolute_paths(v, f"{where}.{k}".lstrip("."))]
  if isinstance(tree, list):
    return [p for i, v in enumerate(tree) for p in absolute_paths(v, f"{where}[{i}]")]
  return [where] if isinstance(tree, str) and tree.startswith(("/", "~")) else []


def present(values: list) -> list:
  """The measured values of a trial list: no None, no NaN, spreads by their mean."""
  out = []
  for v in values:
    v = v.get("mean") if _spread(v) else v
    if v is not None and not (isinstance(v, float) and not math.isfinite(v)):
      out.append(v)
  return out


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
  """(mean, half-width) of the Student-t interval of the mean over trials: x̄ ± t_{(1+c)/2, n−1}
  · s / √n, s the sample standard deviation (ddof 1); the half-width is 0 for one value (RUM's
  ToW intervals, scipy's ``stats.t.interval``).

  Raises:
    ValueError: no value, or ``confidence`` outside (0, 1).

  >>> [round(v, 4) for v in t_interval([0.9, 0.8, 0.7])]  # 0.8 ± 4.3027 · 0.1 / √3
  [0.8, 0.2484]
  """
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence: {confidence}; allowed (0, 1).")
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("values: no value to summarise.")
  if x.size == 1:
    return float(x[0]), 0.0
  half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
  return float(x.mean()), float(half)


def _number(x: float, fmt: str) -> str:
  if fmt == "d" and not float(x).is_integer():
    fmt = ".1f"
  return f"{int(x) if fmt == 'd' else x:{fmt}}"


def cell(values: list, fmt: str) -> str:
  """One table cell from a metric's per-trial values: the value (one trial), mean ± std
  (population std over trials), words joined by " / ", "—" when nothing was measured, and
  "(k/n)" when only k of n trials measured it. A format beginning with :data:`INTERVAL` ("t:")
  shows mean ± the 95 % Student-t half-width over trials (:func:`t_interval`) instead of the std.

  >>> cell([90.0, 92.0], ".1f"), cell([0.5], ".2f"), cell([{"mean": 0.5, "std": 0.1}], ".2f")
  ('91.0 ± 1.0', '0.50', '0.50 ± 0.10')
  >>> cell([None, 4.0, 6.0], ".1f"), cell(["α=0.60 K=5 cos", None], "s")
  ('5.0 ± 1.0 (2/3)', 'α=0.60 K=5 cos / —')
  >>> cell([0.9, 0.8, 0.7], "t:.3f"), cell([0.9], "t:.3f")
  ('0.800 ± 0.248', '0.900')
  """
  interval = fmt.startswith(INTERVAL)
  fmt = fmt.removeprefix(INTERVAL)
  measured = present(values)
  if not measured:
    return "—"
  if any(isinstance(v, str) for v in measured):
    if len(set(measured)) == 1 and len(measured) == len(values):
      return measured[0]
    return " / ".join(v if isinstance(v, str) else "—" for v in values)
  if len(values) == 1:
    v = values[0]
    return (f"{_number(v['mean'], fmt)} ± {_number(v['std'] or 0.0, fmt)}" if _spread(v)
            else _number(v, fmt))
  centre, spread = t_interval(measured) if interval else (np.mean(measured), np.std(measured))
  text = (_number(measured[0], fmt) if len(measured) == 1 else
          f"{_number(centre, fmt)} ± {_number(spread, fmt)}")
  return text + (f" ({len(measured)}/{len(values)})" if len(measured) < len(values) else "")


def markdown_table(summary: dict, table: str | None = None) -> str:
  """The summary's main table (rows = models) or its further table ``table``; cells by
  :func:`cell`.

  Raises:
    ValueError: the summary has no table ``table``.
  """
  if table is None:
    first, columns = "Method", summary["columns"]
    rows = {n: m["metrics"] for n, m in summary["models"].items()}
  elif table in summary.get("tables", {}):
    spec = summary["tables"][table]
    first, columns, rows = spec["first"], spec["columns"], spec["rows"]
  else:
    raise ValueError(f"summary {summary['experiment']}: no table {table!r}; it has "
                     f"{', '.join(summary.get('tables', {})) or 'only its main table'}.")
  lines = [f"| {first} | " + " | ".join(c["header"] for c in columns) + " |",
           "|---" * (len(columns) + 1) + "|"]
  for name, metrics in rows.items():
    cells = [cell(metrics.get(c["key"], [None]), c["format"]) for c in columns]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def numbers(summary: dict) -> list[float]:
  """Every number a summary's tables and floors hold, with each metric's mean and std over
  trials, and mean and t half-width of the "t:" columns (what a hand-written reading may
  quote)."""
  out: list[float] = []

  def add(values):
    measured = [v for v in present(values) if isinstance(v, int | float)]
    out.extend(measured)
    out.extend(x for v in values if _spread(v) for x in v.values() if x is not None)
    if len(measured) > 1:
      out.extend((float(np.mean(measured)), float(np.std(measured))))

  intervals = [c["key"] for c in summary["columns"] if c["format"].startswith(INTERVAL)]
  for model in summary["models"].values():
    for values in model["metrics"].values():
      add(values)
    for key in intervals:
      measured = [v for v in present(model["metrics"].get(key, [])) if isinstance(v, int | float)]
      if len(measured) > 1:
        out.extend(t_interval(measured))
  for spec in summary.get("tables", {}).values():
    for metrics in spec["rows"].values():
      for values in metrics.values():
        add(values)
  for floor in summary.get("noise_floor") or []:
    out.extend(v for v in (floor or {}).values() if isinstance(v, int | float))
  if summary.get("wall_seconds") is not None:
    out.append(summary["wall_seconds"])
  return out


__all__ = ["INTERVAL", "REQUEST_COLUMN", "SCHEMA", "SEQUENCE_COLUMNS", "SUMMARY", "absolute_paths",
           "cell", "dumps", "flatten", "load_summaries", "markdown_table", "numbers", "present",
           "read_summary", "record", "set_command", "summarize", "t_interval", "write_summary"]
