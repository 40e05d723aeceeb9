"""Tables and plots from an experiment's results JSON (``unlearn-jax report RUN_DIR``).

Everything here reads the JSON only, so a finished run's report can be regenerated at any time.
"""

import pathlib

import numpy as np

from unlearn_jax.checkpoint import read_json, write_atomic

# (header, metric key, format) of the results table, in the papers' order.
COLUMNS = (
    ("UA", "UA", ".1f"), ("RA", "RA", ".1f"), ("TA", "TA", ".1f"),
    ("D_t^f acc", "acc/test_forget", ".1f"), ("MIA", "MIA", ".1f"), ("Gap", "gap", ".2f"),
    ("OU PGD", "OU/pgd", ".4f"), ("OU Gauss", "OU/gaussian", ".4f"),
    ("PRA forget", "PRA/forget", ".1f"), ("FM", "FM/forget", ".1f"), ("HR", "HR/forget", ".1f"),
    ("Inv. PSNR", "inversion/psnr", ".1f"), ("CKA→Retrain D_f", "CKA/retrain/forget", ".3f"),
    ("CKA→Retrain D_r", "CKA/retrain/retain", ".3f"), ("Time (s)", "seconds", ".1f"),
)
FEATURE_MODELS = ("original", "retrain", "ft", "ga", "spotter", "opc")


def _cell(value, fmt: str) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return "—"
  if isinstance(value, dict):  # mean ± std over seeds
    return f"{value['mean']:{fmt}} ± {value['std']:{fmt}}"
  return f"{value:{fmt}}"


def markdown_table(rows: dict[str, dict]) -> str:
  """Rows = models (Original, Retrain, methods), columns = :data:`COLUMNS`."""
  lines = ["| Method | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 1) + "|"]
  for name, metrics in rows.items():
    cells = [_cell(metrics.get(key), fmt) for _, key, fmt in COLUMNS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _plot_features(models: dict, path: pathlib.Path, plt) -> None:
  names = [n for n in FEATURE_MODELS if n in models and "projection" in models[n]["details"]]
  if not names:
    return
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
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
  plt.close(fig)


def _plot_pra(models: dict, path: pathlib.Path, plt) -> None:
  curves = {n: m["details"]["pra"]["curve"] for n, m in models.items()
            if "pra" in m.get("details", {})}
  if not curves:
    return
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
  for ax, mode in zip(axes, ("cosine", "l2"), strict=True):
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for name, curve in curves.items():
      if mode in curve:
        alpha, acc = np.asarray(curve[mode]).T
        ax.plot(alpha, acc, marker=".", label=name)
    ax.set_xlabel("α")
    ax.set_title(f"PRA ({mode} rule), 5 shots")
  axes[0].set_ylabel("forget accuracy after the edit (%)")
  axes[1].legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_recovery(rows: dict[str, dict], path: pathlib.Path, plt) -> None:
  names = [n for n, m in rows.items() if m.get("FM/forget") is not None]
  if not names:
    return

  def value(m, k):
    v = m.get(k)
    return v["mean"] if isinstance(v, dict) else (v or 0.0)

  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 3.6))
  for offset, key, label in ((-0.27, "acc/forget", "unlearned"), (0.0, "FM/forget", "FM"),
                             (0.27, "HR/forget", "HR")):
    ax.bar(x + offset, [value(rows[n], key) for n in names], 0.27, label=label)
  ax.set_xticks(x, names, rotation=45, ha="right")
  ax.set_ylabel("forget accuracy on D_f (%)")
  ax.set_title("Training-free recovery")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_inversion(models: dict, path: pathlib.Path, plt) -> None:
  runs = {n: m["details"]["inversion"] for n, m in models.items()
          if "inversion" in m.get("details", {})}
  if not runs:
    return
  truth = np.asarray(next(iter(runs.values()))["truth"])
  rows = [("true", truth)] + [(f"{n} ({r['psnr']:.1f} dB)", np.asarray(r["reconstructions"]))
                              for n, r in runs.items()]
  cols = len(truth)
  fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols + 1.5, 1.3 * len(rows)),
                           squeeze=False)
  for r, (label, images) in enumerate(rows):
    for c in range(cols):
      ax = axes[r][c]
      image = np.clip(images[c], 0, 1)
      ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
    axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
  fig.suptitle("Gradient inversion of forget images")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_report(results: dict, out: pathlib.Path) -> None:
  """Writes ``results.md`` and the PNG plots under ``out``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

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
  write_atomic(out / "results.md", header + markdown_table(rows))
  _plot_features(models, out / "features.png", plt)
  _plot_pra(models, out / "pra_alpha.png", plt)
  _plot_recovery(rows, out / "recovery.png", plt)
  _plot_inversion(models, out / "inversion.png", plt)


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
