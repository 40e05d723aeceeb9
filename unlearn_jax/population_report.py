"""Tables and plots from a population experiment's results JSON (the challenge score, U-LiRA
with KLOM, memorization strata).

Reads the JSON only, so a finished run's report can be regenerated at any time. A metric that is
missing or not finite prints as "—", never as NaN.
"""

import pathlib

import numpy as np

from unlearn_jax.checkpoint import write_atomic

CHALLENGE_COLUMNS = (
    ("F", "F", ".3f"), ("Final score", "final", ".3f"), ("RA_u / RA_r", "ra_ratio", ".3f"),
    ("TA_u / TA_r", "ta_ratio", ".3f"), ("RA (%)", "RA", ".1f"), ("TA (%)", "TA", ".1f"),
    ("Forget acc. (%)", "forget_accuracy", ".1f"), ("Mean ε", "mean_epsilon", ".2f"),
    ("Guard share", "guard_fraction", ".2f"), ("Time (s)", "seconds", ".0f"))
ULIRA_COLUMNS = (
    ("U-LiRA acc.", "u_lira.accuracy", ".3f"), ("U-LiRA AUC", "u_lira.auc", ".3f"),
    ("U-LiRA best bal. acc.", "u_lira.best_balanced_accuracy", ".3f"),
    ("TPR@1% FPR", "u_lira.tpr@1e-02fpr", ".3f"), ("TPR@0.1% FPR", "u_lira.tpr@1e-03fpr", ".3f"),
    ("P2 acc.", "p2.accuracy", ".3f"), ("P2 AUC", "p2.auc", ".3f"),
    ("P1 acc.", "p1.accuracy", ".3f"), ("Share ex. acc. ≥ 0.75", "vulnerability.share_vulnerable",
                                        ".3f"),
    ("Median ex. acc.", "vulnerability.q50", ".3f"), ("Skipped", "skipped", "d"),
    ("Forget acc. (%)", "forget_accuracy", ".1f"), ("RA (%)", "RA", ".1f"), ("TA (%)", "TA", ".1f"),
    ("KLOM forget", "klom.forget.p95", ".2f"), ("KLOM retain", "klom.retain.p95", ".2f"),
    ("KLOM val", "klom.val.p95", ".2f"), ("Time (s)", "seconds", ".0f"))
# Per stratum of the memorization protocol (keys below the stratum's name).
STRATUM_COLUMNS = (
    ("Forget acc. (%)", "forget_accuracy", ".1f"), ("FA gap to Retrain", "forget_gap", ".1f"),
    ("RA (%)", "RA", ".1f"), ("TA (%)", "TA", ".1f"), ("KLOM forget", "klom.forget.p95", ".2f"),
    ("KLOM retain", "klom.retain.p95", ".2f"), ("KLOM val", "klom.val.p95", ".2f"),
    ("Time (s)", "seconds", ".0f"))
STRATA_COLUMNS = (("Examples", "size", "d"), ("mem min", "memorization.min", ".2f"),
                  ("mem mean", "memorization.mean", ".2f"),
                  ("mem max", "memorization.max", ".2f"))
KLOM_NOTE = ("KLOM: P95 over the split's examples of the KL divergence (nats) between the "
             "margin histograms of the row's models and a reference half of Retrain's, at one "
             "population size (docs/math.md §7.7); Retrain's cells are the noise floor, its "
             "other half against the reference.\n")
LIRA_COLUMNS = (("AUC", "auc", ".3f"), ("Best bal. acc.", "best_balanced_accuracy", ".3f"),
                ("TPR@1% FPR", "tpr@1e-02fpr", ".3f"), ("TPR@0.1% FPR", "tpr@1e-03fpr", ".3f"))


def _lookup(metrics: dict, dotted: str):
  value = metrics
  for part in dotted.split("."):
    if not isinstance(value, dict) or part not in value:
      return None
    value = value[part]
  return value


def _cell(value, fmt: str) -> str:
  if isinstance(value, dict):  # mean ± std over targets or models
    if value.get("mean") is None:
      return "—"
    return f"{_cell(value['mean'], fmt)} ± {_cell(value['std'], fmt)}"
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return "—"
  return f"{value:{fmt}}"


def markdown_table(rows: dict[str, dict], columns, first: str = "Method") -> str:
  """Rows = names → metrics dicts, columns = (header, dotted key, format)."""
  lines = [f"| {first} | " + " | ".join(h for h, _, _ in columns) + " |",
           "|---" * (len(columns) + 1) + "|"]
  for name, metrics in rows.items():
    lines.append(f"| {name} | " + " | ".join(_cell(_lookup(metrics, k), f)
                                             for _, k, f in columns) + " |")
  return "\n".join(lines) + "\n"


def main_columns(results: dict) -> tuple:
  """The main table's columns of a population run: per protocol; for memorization, forget
  accuracy, its gap to Retrain and KLOM on the forget set per stratum."""
  if results["protocol"] == "challenge":
    return CHALLENGE_COLUMNS
  if results["protocol"] == "ulira":
    return ULIRA_COLUMNS
  return tuple((f"{header} {s}", f"{s}.{key}", fmt) for s in results["strata"]
               for header, key, fmt in (("FA (%)", "forget_accuracy", ".1f"),
                                        ("FA gap", "forget_gap", ".1f"),
                                        ("KLOM-F", "klom.forget.p95", ".2f")))


def further_tables(results: dict) -> dict[str, tuple]:
  """Tables beside the main one: name → (title, first column, columns, rows of metrics)."""
  if results["protocol"] == "ulira":
    return {"lira": ("LiRA on the originals", "LiRA",
                     LIRA_COLUMNS, results["lira"])}
  if results["protocol"] != "memorization":
    return {}
  tables = {"strata": ("Strata: memorization of their examples", "Stratum", STRATA_COLUMNS,
                       results["strata"])}
  for s in results["strata"]:
    tables[s] = (f"Stratum {s}", "Method", STRATUM_COLUMNS,
                 {n: r["metrics"][s] for n, r in results["rows"].items()})
  return tables


def _strata_plot(results: dict, path: pathlib.Path) -> None:
  """Forget accuracy (mean ± std over models), its gap to Retrain and KLOM forget (P95) against
  the stratum, one line per method."""
  strata = list(results["strata"])
  panels = (("forget accuracy on the stratum (%)", "forget_accuracy"),
            ("|forget acc. − Retrain's| (points)", "forget_gap"),
            ("KLOM forget (P95, nats)", "klom.forget.p95"))
  from matplotlib.figure import Figure

  fig = Figure(figsize=(12, 3.6))
  axes = fig.subplots(1, 3)
  for ax, (label, key) in zip(axes, panels, strict=True):
    for name, row in results["rows"].items():
      values = [_lookup(row["metrics"][s], key) for s in strata]
      mean = [v["mean"] if isinstance(v, dict) else v for v in values]
      std = [v["std"] if isinstance(v, dict) else 0.0 for v in values]
      if all(m is None for m in mean):
        continue
      mean = [np.nan if m is None else m for m in mean]
      ax.errorbar(range(len(strata)), mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xticks(range(len(strata)), strata)
    ax.set_xlabel("memorization stratum")
    ax.set_ylabel(label, fontsize=8)
  axes[0].legend(fontsize=7)
  fig.suptitle("Methods per memorization stratum", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _boxplot(series: dict[str, list], path: pathlib.Path, *, xlabel: str, title: str,
             lines: tuple[float, ...] = ()) -> None:
  from matplotlib.figure import Figure

  names = [n for n, v in series.items() if any(x is not None for x in v)]
  if not names:
    return
  data = [np.asarray([x for x in series[n] if x is not None], np.float64) for n in names]
  fig = Figure(figsize=(7, 0.45 * len(names) + 1.4))
  ax = fig.subplots()
  ax.boxplot(data, orientation="horizontal", tick_labels=names, showfliers=False)
  rng = np.random.default_rng(0)  # jitter of the plotted points only
  for i, values in enumerate(data, 1):
    ax.scatter(values, i + rng.uniform(-0.2, 0.2, len(values)), s=3, alpha=0.3)
  for x in lines:
    ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _checks_line(checks: dict) -> str:
  """The checks of docs/math.md §7.6 in one sentence (noise = se of Retrain's U-LiRA accuracy)."""
  if not checks:
    return ""
  parts = []
  if "retrain_at_chance" in checks:
    parts.append(f"Retrain at chance within 3 × {checks['noise']:.4f} (se over targets): "
                 f"{'yes' if checks['retrain_at_chance'] else 'NO'}")
  parts.append("the original (no unlearning) clearly above chance: "
               f"{'yes' if checks['original_above_chance'] else 'NO'}")
  below = [n for n, ok in checks["u_lira_ge_p2"].items() if not ok]
  parts.append("U-LiRA ≥ P2 for every row (3 se)" + (f": NO for {', '.join(below)}" if below
                                                      else ": yes"))
  return "\nChecks (docs/math.md §7.6): " + "; ".join(parts) + ".\n"


def write_population_report(results: dict, out: pathlib.Path) -> None:
  """Writes ``results.md`` and the plot (``epsilon.png``, ``vulnerability.png`` or
  ``strata.png``) under ``out``."""
  out, sizes, hw = pathlib.Path(out), results["sizes"], results["hardware"]
  rows = results["rows"]
  text = (f"# {results['config']['name']} ({results['protocol']})\n\n"
          f"seed {results['seed']}; pool {sizes['pool']}, target set {sizes['target']}, test "
          f"{sizes['test']}; M = {sizes['models']} models per population; "
          f"{hw['processor']}, {len(hw['devices'])} {hw['backend']} device(s); wall time "
          f"{results['wall_seconds']:.0f} s.\n\n")
  metrics = {n: r["metrics"] for n, r in rows.items()}
  text += markdown_table(metrics, main_columns(results))
  if results["protocol"] == "challenge":
    _boxplot({n: r["epsilon"] for n, r in rows.items()}, out / "epsilon.png",
             xlabel="ε per forget example (50 = cap)",
             title="Challenge score: ε per forget example (lower = closer to Retrain)")
  elif results["protocol"] == "ulira":
    text += _checks_line(results.get("checks", {}))
    _boxplot({n: r["per_example_accuracy"] for n, r in rows.items()}, out / "vulnerability.png",
             xlabel="per-example U-LiRA accuracy over the targets that attacked it",
             title="Per-example vulnerability (0.5 = chance, the ideal)", lines=(0.5, 0.75))
  else:
    mem = results["memorization"]
    text += (f"\nMemorization from {mem['models']} models on balanced halves (a score needs "
             f"{mem['min_models']} with and without the example), {mem['seconds']:.0f} s; "
             f"FA: forget accuracy on the stratum, FA gap: |FA − Retrain's FA| (points).\n")
    _strata_plot(results, out / "strata.png")
  if results["protocol"] != "challenge":
    text += "\n" + KLOM_NOTE
  for title, first, columns, table in further_tables(results).values():
    text += f"\n{title}:\n\n" + markdown_table(table, columns, first=first)
  if results.get("excluded"):
    text += "\nExcluded: " + "; ".join(f"{n} ({why})" for n, why in
                                       results["excluded"].items()) + ".\n"
  write_atomic(out / "results.md", text)


__all__ = ["further_tables", "main_columns", "markdown_table", "write_population_report"]
