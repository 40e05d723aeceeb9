"""docs/results.md, docs/claims.md and docs/hparams.md, generated (``unlearn-jax report --docs``)
from the recorded run summaries ``results/*.json``, the hand-written template
docs/results.in.md, the claims (:mod:`unlearn_jax.claims`) and the methods registry; and
:func:`check_docs`, which says where the committed docs differ from what they generate.

Template markers, each alone on a line; every other line is copied as it is:

* ``<!-- table: NAME -->``: a caption (command, date, hardware, versions, seeds, forget classes,
  n trials) and the table of ``results/NAME.json``; ``NAME/TABLE`` for its further table TABLE.
  A missing summary is an error, unless the marker ends in ``pending``: then a line says how to
  record it.
* ``<!-- figure: NAME FIGURE -->``: ``docs/img/NAME_FIGURE.png`` drawn from the summary (one of
  :data:`FIGURES`; the feature, PRA-curve, inversion and population plots need a run directory:
  ``unlearn-jax report RUN_DIR``).
* ``<!-- reading: NAME -->`` … ``<!-- /reading -->``: a hand-written reading of NAME's table,
  marked as such; every decimal number it quotes must be one of the summary's (a value, or a mean
  or std over trials, at the quoted precision). A derived number is written ``{3.4}`` and printed
  without the braces.
* ``<!-- by hand -->`` … ``<!-- /by hand -->``: text recorded by hand before generated summaries,
  copied under a banner saying so, not checked.
"""

import difflib
import pathlib
import re

import numpy as np

from unlearn_jax.claims_page import render_claims
from unlearn_jax.methods import METHODS
from unlearn_jax.methods.registry import BASE_PROFILE
from unlearn_jax.summaries import load_summaries, markdown_table, numbers, present

TEMPLATE = "docs/results.in.md"
RESULTS, CLAIMS, HPARAMS = "docs/results.md", "docs/claims.md", "docs/hparams.md"
IMG = "docs/img"
COMMAND = "unlearn-jax report --docs"
# name → (title, y label, ((metric key, legend label), ...)): bars per model, mean ± std.
FIGURES = {
    "recovery": ("Forget accuracy on D_f: unlearned, after FM, after HR", "forget accuracy (%)",
                 (("acc/forget", "unlearned"), ("FM/forget", "FM"), ("HR/forget", "HR"))),
    "pra": ("PRA: the reference setting and the strongest attack", "forget accuracy (%)",
            (("PRA/ref", "PRA ref."), ("PRA/forget", "PRA strongest"))),
}
_MARKER = re.compile(r"^<!--\s*(table|figure|reading|/reading|by hand|/by hand)\s*:?\s*(.*?)\s*"
                     r"-->\s*$")
_NUMBER = re.compile(r"(?<![\w.{])([-−]?\d+\.\d+)(?!\w|\.\d|\})")
_DERIVED = re.compile(r"\{([-−]?\d+(?:\.\d+)?)\}")
_CODE = re.compile(r"`[^`]*`")


def _caption(name: str, s: dict) -> str:
  hw, v, n = s["hardware"], s["versions"], len(s["seeds"])
  command = f"`{s['command']}`" if s.get("command") else "A run from Python (no command)"
  where = (f"recorded {s['date']} on {hw['processor']}, {len(hw['devices'])} {hw['backend']} "
           f"device(s) (unlearn_jax {v.get('unlearn_jax')}, jax {v.get('jax')})")
  seeds = ", ".join(map(str, s["seeds"]))
  classes = " / ".join("+".join(map(str, c)) or "random" for c in s["forget_classes"])
  if s["kind"] == "population" and s.get("protocol") == "memorization":
    z = s["sizes"][0]
    body = (f"One run (n = 1), seed {seeds}: pool {z['pool']}, {z['target']} examples per "
            f"memorization stratum, test {z['test']}, K = {z['models']} models per population; "
            "± is the std over the K models")
  elif s["kind"] == "population":
    z = s["sizes"][0]
    body = (f"One run (n = 1), seed {seeds}: pool {z['pool']}, target set {z['target']} "
            f"(classes {classes}), test {z['test']}, M = {z['models']} models per population; "
            "± is the std over target models")
  elif n == 1:
    body = f"One trial (n = 1), seed {seeds}, forget classes {classes}; cells are its values"
  else:
    body = (f"n = {n} trials (seeds {seeds}; forget classes {classes}); cells are mean ± std "
            "over trials (population std), \"(k/n)\" where only k trials measured it")
  wall = s.get("wall_seconds")
  return (f"{command} — {where}. {body}"
          + (f"; wall time {wall:.0f} s" if wall is not None else "")
          + f". Summary: [results/{name}.json](../results/{name}.json).")


def _table(arg: str, summaries: dict, where: str) -> str:
  words = arg.split()
  pending = words[1:] == ["pending"]
  if not words or (len(words) > 1 and not pending):
    raise ValueError(f"{where}: expected <!-- table: NAME[/TABLE] [pending] -->, got {arg!r}.")
  name, _, table = words[0].partition("/")
  if name not in summaries:
    if pending and table:
      return f"*Its table `{table}` prints here once results/{name}.json is recorded.*\n"
    if pending:
      return (f"*Not recorded yet: run its command, then `unlearn-jax record RUN_DIR` and "
              f"`{COMMAND}` (this marker then prints results/{name}.json).*\n")
    raise ValueError(f"{where}: no summary results/{name}.json for <!-- table: {arg} --> "
                     "(record the run: unlearn-jax record RUN_DIR).")
  s = summaries[name]
  source = f"<!-- generated from results/{name}.json by {COMMAND}; do not edit -->\n"
  if table:
    title = s.get("tables", {}).get(table, {}).get("title", table)
    return source + f"{title}:\n\n" + markdown_table(s, table)
  return source + _caption(name, s) + "\n\n" + markdown_table(s)


def _figure(arg: str, summaries: dict, where: str, figures: list) -> str:
  words = arg.split()
  if len(words) != 2 or words[1] not in FIGURES:
    raise ValueError(f"{where}: expected <!-- figure: NAME FIGURE --> with FIGURE one of "
                     f"{', '.join(FIGURES)}, got {arg!r}.")
  name, figure = words
  if name not in summaries:
    raise ValueError(f"{where}: no summary results/{name}.json for <!-- figure: {arg} -->.")
  figures.append((name, figure))
  n = len(summaries[name]["seeds"])
  return (f"![{FIGURES[figure][0]} ({name}, mean ± std over n = {n})]"
          f"(img/{name}_{figure}.png)\n")


def _reading_problems(text: str, name: str, summary: dict, where: str) -> list[str]:
  known = numbers(summary)
  problems = []
  for token in _NUMBER.findall(_CODE.sub("", text)):
    digits = len(token.split(".")[1])
    quoted = token.replace("−", "-")
    if not any(f"{v:.{digits}f}" in (quoted, quoted.lstrip("-")) for v in known):
      problems.append(f"{where}: the reading of {name} quotes {token}, which is in no value of "
                      f"results/{name}.json (write a derived number as {{{token}}}).")
  return problems


def render_results(template: str, summaries: dict[str, dict], *,
                   source: str = TEMPLATE) -> tuple[str, list[tuple[str, str]], list[str]]:
  """docs/results.md from the template text and the summaries.

  Returns:
    (the text, the figures to draw as (summary, figure) pairs, the readings' problems).

  Raises:
    ValueError: a marker naming a summary that is not recorded (and not ``pending``), an unknown
      marker argument, or a block left open or closed twice (names the template line).
  """
  lines = template.splitlines()
  out, figures, problems = [], [], []
  block, start = None, 0  # the open block: ("reading", name) or ("by hand", "")
  for i, line in enumerate(lines):
    where = f"{source}:{i + 1}"
    marker = _MARKER.match(line)
    kind, arg = marker.groups() if marker else (None, "")
    if kind in ("reading", "by hand"):
      if block:
        raise ValueError(f"{where}: <!-- {kind} --> inside the block opened at line {start}.")
      if kind == "reading" and arg not in summaries:
        raise ValueError(f"{where}: no summary results/{arg}.json for <!-- reading: {arg} -->.")
      block, start, body = (kind, arg), i + 1, []
      out.append(line)
      out.append(f"*Reading (hand-written; every number it quotes is checked against "
                 f"[results/{arg}.json](../results/{arg}.json)):*" if kind == "reading" else
                 "> **Recorded by hand before generated summaries; to be regenerated.** The "
                 "tables and readings of this block are not checked against a summary.")
    elif kind in ("/reading", "/by hand"):
      if not block or block[0] != kind[1:]:
        raise ValueError(f"{where}: <!-- {kind} --> closes no open <!-- {kind[1:]} --> block.")
      if block[0] == "reading":
        problems += _reading_problems("\n".join(body), block[1], summaries[block[1]],
                                      f"{source}:{start}")
      block = None
      out.append(line)
    elif kind == "table":
      out.append(_table(arg, summaries, where).rstrip("\n"))
    elif kind == "figure":
      out.append(_figure(arg, summaries, where, figures).rstrip("\n"))
    else:
      if block:
        body.append(line)
      out.append(_DERIVED.sub(r"\1", line) if block and block[0] == "reading" else line)
  if block:
    raise ValueError(f"{source}:{start}: <!-- {block[0]} --> is never closed.")
  if out and out[0].startswith("# "):
    out[1:1] = ["", f"*Generated by `{COMMAND}` from [results.in.md](results.in.md) (the "
                    "hand-written text) and the run summaries in [results/](../results/); "
                    "`unlearn-jax report --check` and tests/test_results_docs.py fail when this "
                    "file differs from what they generate.*"]
  return "\n".join(out) + "\n", figures, problems


def _value(v) -> str:
  if isinstance(v, tuple | list):
    return "(" + ", ".join(_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
  return repr(v)


def _flat(values: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in values.items():
    out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
  return out


def render_hparams(methods=None) -> str:
  """docs/hparams.md: the hyper-parameters of every method (default: the library's own, not
  those a config file or a test registers) under every profile."""
  if methods is None:
    methods = {n: m for n, m in METHODS.items()
               if m.build.__module__.startswith("unlearn_jax.methods.")}
  profiles = (BASE_PROFILE, *sorted({p for m in methods.values() for p in m.profiles}
                                    - {BASE_PROFILE}))
  lines = ["# Method hyper-parameters", "",
           f"*Generated by `{COMMAND}` from the methods registry (`unlearn_jax/methods/`); do "
           "not edit by hand.*", "",
           f"Profiles: {', '.join(f'`{p}`' for p in profiles)} (`config.profile`). `small` is "
           "each method's `defaults`; another profile changes only the values it names, and a "
           "profile a method does not name runs its `small` values. Bold: differs from `small`. "
           "A run's summary records the exact values it used (`models.<name>.hparams` in "
           "results/<experiment>.json), overrides (`--config.hparams.<method>.<key>=…`) "
           "included.", ""]
  for name in sorted(methods):
    method = methods[name]
    table = {p: _flat(method.hparams(p).to_dict()) for p in profiles}
    lines += [f"## {name}", "", f"{method.description} Reads: "
              f"{', '.join(sorted(method.reads))}.", "",
              "| hyper-parameter | " + " | ".join(profiles) + " |",
              "|---" * (len(profiles) + 1) + "|"]
    for key in table[profiles[0]]:
      cells = []
      for p in profiles:
        text = f"`{_value(table[p][key])}`"
        cells.append(f"**{text}**" if table[p][key] != table[profiles[0]][key] else text)
      lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines).rstrip("\n") + "\n"


def render_docs(root: str | pathlib.Path = ".") -> tuple[dict[str, str], list, list[str]]:
  """Every generated page from ``root``'s template and summaries: ({relative path: text},
  figures to draw, problems). Raises ValueError as :func:`render_results`."""
  root = pathlib.Path(root)
  template = root / TEMPLATE
  if not template.exists():
    raise FileNotFoundError(f"report --docs: no {TEMPLATE} under {root.absolute()} (run it from "
                            "the repository's root).")
  summaries = load_summaries(root)
  results, figures, problems = render_results(template.read_text(encoding="utf-8"), summaries)
  pages = {RESULTS: results, CLAIMS: render_claims(summaries), HPARAMS: render_hparams()}
  return pages, figures, problems


def _draw(summary: dict, figure: str, path: pathlib.Path) -> None:
  from matplotlib.figure import Figure

  title, ylabel, series = FIGURES[figure]
  models = [n for n, m in summary["models"].items()
            if any(present(m["metrics"].get(k, [])) for k, _ in series)]
  x, width = np.arange(len(models)), 0.8 / len(series)
  fig = Figure(figsize=(max(6, 0.6 * len(models)), 3.6))
  ax = fig.subplots()
  for i, (key, label) in enumerate(series):
    stats = [present(summary["models"][n]["metrics"].get(key, [])) for n in models]
    means = [float(np.mean(v)) if v else 0.0 for v in stats]
    stds = [float(np.std(v)) if len(v) > 1 else 0.0 for v in stats]
    ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, label=label,
           yerr=stds if any(stds) else None, capsize=2)
  ax.set_xticks(x, models, rotation=45, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(f"{title} ({summary['experiment']}, n = {len(summary['seeds'])})", fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def write_docs(root: str | pathlib.Path = ".", *, figures: bool = True) -> list[str]:
  """Writes the generated pages (and, with ``figures``, their plots) under ``root``; returns the
  readings' problems (numbers that are in no summary)."""
  root = pathlib.Path(root)
  pages, to_draw, problems = render_docs(root)
  for rel, text in pages.items():
    (root / rel).write_text(text, encoding="utf-8")
  if figures:
    summaries = load_summaries(root)
    (root / IMG).mkdir(parents=True, exist_ok=True)
    for name, figure in to_draw:
      _draw(summaries[name], figure, root / IMG / f"{name}_{figure}.png")
  return problems


def check_docs(root: str | pathlib.Path = ".") -> list[str]:
  """Where ``root``'s committed docs differ from what its template and summaries generate
  (byte for byte; plots only for existing), and the readings' problems; [] when all agree.

  Raises:
    ValueError, FileNotFoundError: as :func:`render_docs` (e.g. a summary that is not recorded).
  """
  root = pathlib.Path(root)
  pages, to_draw, differences = render_docs(root)
  for rel, text in pages.items():
    path = root / rel
    if not path.exists():
      differences.append(f"{rel}: missing; run `{COMMAND}`.")
      continue
    found = path.read_text(encoding="utf-8")
    if found == text:
      continue
    want, got = text.splitlines(), found.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, want, got,
                                                       autojunk=False).get_opcodes():
      if tag != "equal":
        differences.append(f"{rel}:{j1 + 1}: {tag}: generated {want[i1:i2][:2]!r}, the file has "
                           f"{got[j1:j2][:2]!r}; run `{COMMAND}`.")
    if want == got:
      differences.append(f"{rel}: differs in line endings or the final newline.")
  for name, figure in to_draw:
    if not (root / IMG / f"{name}_{figure}.png").exists():
      differences.append(f"{IMG}/{name}_{figure}.png: missing; run `{COMMAND}`.")
  return differences


__all__ = ["FIGURES", "check_docs", "render_docs", "render_hparams", "render_results",
           "write_docs"]
