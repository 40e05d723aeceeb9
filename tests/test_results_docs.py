"""docs/results.md, docs/claims.md and docs/hparams.md are what the committed summaries, the
template and the registry generate, byte for byte; one number edited by hand fails the check."""

import pathlib
import shutil

import pytest

from unlearn_jax import cli, results_docs, summaries
from unlearn_jax.methods import METHODS
from unlearn_jax.methods.registry import known_profiles

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = (results_docs.RESULTS, results_docs.CLAIMS, results_docs.HPARAMS)


def _copy(tmp_path, *, pages=True) -> pathlib.Path:
  """The template, the summaries and (with ``pages``) the generated pages, in a fresh folder."""
  root = tmp_path / "repo"
  (root / "docs").mkdir(parents=True)
  shutil.copytree(ROOT / "results", root / "results")
  shutil.copy(ROOT / results_docs.TEMPLATE, root / results_docs.TEMPLATE)
  if pages:
    for page in PAGES:
      shutil.copy(ROOT / page, root / page)
    shutil.copytree(ROOT / results_docs.IMG, root / results_docs.IMG)
  return root


def _summary(**metrics) -> dict:
  return {"schema": 1, "experiment": "toy", "kind": "protocol", "command": "unlearn-jax run x.py",
          "date": "2026-01-01T00:00:00Z", "versions": {"jax": "0.10.2", "unlearn_jax": "0.1.0"},
          "hardware": {"processor": "x86_64", "devices": ["cpu:0"], "backend": "cpu"},
          "config": {"data": {"name": "digits"}, "model": {"name": "small_cnn"}},
          "seeds": [0, 1], "forget_classes": [[0], [3]], "wall_seconds": 12.0,
          "columns": [{"header": "UA", "key": "UA", "format": ".1f"}],
          "models": {"spotter": {"metrics": metrics, "hparams": None, "reads": ["forget"]}},
          "noise_floor": [None, None], "tables": {}}


def test_committed_docs_are_what_the_summaries_generate():
  """Fails when a generated page was edited by hand or a summary changed without regenerating:
  run ``unlearn-jax report --docs`` and commit the pages."""
  differences = results_docs.check_docs(ROOT)
  assert differences == [], "\n".join(differences)


def test_one_number_edited_by_hand_in_a_generated_table_fails_the_check(tmp_path, capsys):
  root = _copy(tmp_path)
  assert results_docs.check_docs(root) == []
  page = root / results_docs.RESULTS
  lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
  start = next(i for i, line in enumerate(lines) if "generated from results/digits.json" in line)
  row = next(i for i in range(start, len(lines)) if lines[i].startswith("| retrain |"))
  cells = lines[row].split(" | ")
  cells[1] = "99.9" if cells[1] != "99.9" else "98.8"  # UA of Retrain
  lines[row] = " | ".join(cells)
  page.write_text("".join(lines), encoding="utf-8")
  differences = results_docs.check_docs(root)
  assert len(differences) == 1 and differences[0].startswith(f"docs/results.md:{row + 1}: "
                                                             "replace: generated")
  assert cli.main(["report", "--check", "--root", str(root)]) == 1
  assert "1 difference(s)" in capsys.readouterr().out
  assert cli.main(["report", "--docs", "--root", str(root)]) == 0  # regenerating repairs it
  assert results_docs.check_docs(root) == []


def test_a_summary_changed_without_regenerating_fails_the_check(tmp_path):
  root = _copy(tmp_path)
  path = root / "results" / "digits.json"
  summary = summaries.read_summary(path)
  quoted = f"{summary['models']['spotter']['metrics']['OU/pgd'][0]:.4f}"
  summary["models"]["spotter"]["metrics"]["OU/pgd"] = [0.0011]
  path.write_text(summaries.dumps(summary), encoding="utf-8")
  differences = results_docs.check_docs(root)
  assert any(d.startswith("docs/results.md:") for d in differences)
  assert any(d.startswith("docs/claims.md:") for d in differences)  # the claims read it too
  assert any(f"the reading of digits quotes {quoted}, which is in no value" in d
             for d in differences)  # and so does the hand-written reading


def test_report_docs_on_a_fresh_clone_reproduces_the_pages_byte_for_byte(tmp_path):
  root = _copy(tmp_path, pages=False)
  assert cli.main(["report", "--docs", "--root", str(root)]) == 0
  for page in PAGES:
    assert (root / page).read_bytes() == (ROOT / page).read_bytes(), page
  for name, figure in results_docs.render_docs(root)[1]:
    assert (root / results_docs.IMG / f"{name}_{figure}.png").stat().st_size > 5_000


def test_a_missing_summary_fails_loudly_unless_pending():
  with pytest.raises(ValueError, match=r"x.in.md:2: no summary results/nope.json"):
    results_docs.render_results("# T\n<!-- table: nope -->\n", {}, source="x.in.md")
  text, _, _ = results_docs.render_results("# T\n<!-- table: nope pending -->\n", {})
  assert "Not recorded yet" in text and "unlearn-jax record RUN_DIR" in text
  with pytest.raises(ValueError, match=r"no summary results/nope.json for <!-- figure"):
    results_docs.render_results("<!-- figure: nope pra -->\n", {})
  with pytest.raises(ValueError, match="FIGURE one of recovery, pra"):
    results_docs.render_results("<!-- figure: toy features -->\n", {"toy": _summary()})
  with pytest.raises(ValueError, match=r":1: <!-- by hand --> is never closed"):
    results_docs.render_results("<!-- by hand -->\ntext\n", {})
  with pytest.raises(ValueError, match="closes no open"):
    results_docs.render_results("<!-- /reading -->\n", {})


def test_tables_and_captions_come_from_the_summary():
  text, _, _ = results_docs.render_results("# T\n\n<!-- table: toy -->\n",
                                           {"toy": _summary(UA=[100.0, 98.0])})
  assert text.startswith("# T\n\n*Generated by `unlearn-jax report --docs`")
  assert "`unlearn-jax run x.py` — recorded 2026-01-01T00:00:00Z on x86_64" in text
  assert "n = 2 trials (seeds 0, 1; forget classes 0 / 3)" in text
  assert "| spotter | 99.0 ± 1.0 |" in text


def test_a_reading_may_quote_only_the_summarys_numbers():
  template = ("<!-- reading: toy -->\nUA 99.0 ± 1.0 (100.0 / 98.0), a gap of {2.0} points; "
              "`--config.x=0.25`; 97.5 is wrong.\n<!-- /reading -->\n")
  text, _, problems = results_docs.render_results(template, {"toy": _summary(UA=[100.0, 98.0])},
                                                  source="t.in.md")
  assert problems == ["t.in.md:1: the reading of toy quotes 97.5, which is in no value of "
                      "results/toy.json (write a derived number as {97.5})."]
  assert "a gap of 2.0 points" in text and "*Reading (hand-written;" in text


def test_hparams_page_lists_every_method_under_every_profile():
  page = results_docs.render_hparams()
  for name, method in METHODS.items():
    assert f"## {name}\n" in page
    for key, value in method.defaults.items():
      if not isinstance(value, dict):
        assert f"| {key} | `{results_docs._value(value)}` |" in page, (name, key)
  assert "| hyper-parameter | " + " | ".join(known_profiles()) + " |" in page
  from unlearn_jax.methods import register
  register("toy_method", reads=("forget",), description="A test's.", defaults={"epochs": 1},
           profiles={"toy_profile": {"epochs": 2}})(lambda *a: None)
  try:  # a method registered by a config file or a test does not change the page
    assert results_docs.render_hparams() == page
  finally:
    del METHODS["toy_method"]
