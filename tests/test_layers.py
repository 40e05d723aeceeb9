"""The package's imports run one way (docs/design.md, "Layers"): every import of an
``unlearn_jax`` module, at module level or inside a function, goes to the same layer or one
below, and module-level imports form no cycle."""

import ast
import pathlib

import unlearn_jax

ROOT = pathlib.Path(unlearn_jax.__file__).parent

# Lowest first. A module is in the layer of its first dotted component (a package or a module).
LAYERS = (
    ("seeding", "distributed"),
    ("data",),
    ("models",),
    ("optim", "objectives", "validation"),
    ("training",),
    ("checkpoint", "perturbations"),
    ("methods",),
    ("unlearning",),
    ("evaluation",),
    ("populations",),
    ("report", "population_report", "summaries", "paper_gap", "claims", "claims_page",
     "results_docs"),
    ("config", "runs", "sequence", "experiment", "runner", "population_experiment",
     "population_memorization", "population_runner"),
    ("cli",),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(ROOT.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    out[".".join(("unlearn_jax", *parts))] = path
  return out


def _imports(path: pathlib.Path, modules) -> list[tuple[str, bool]]:
  """(imported unlearn_jax module, at module level) for every import in ``path``."""
  tree = ast.parse(path.read_text())
  top = {id(node) for node in tree.body}
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
               for a in node.names]
    else:
      continue
    out += [(n, id(node) in top) for n in names if n.startswith("unlearn_jax.")]
  return out


def _layer(module: str) -> int | None:
  parts = module.split(".")
  return LAYER.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer():
  unplaced = [m for m in _modules() if m != "unlearn_jax" and _layer(m) is None]
  assert not unplaced, f"add these to LAYERS (and docs/design.md): {unplaced}"


def test_no_import_runs_up_the_layers():
  modules = _modules()
  upward = [f"{m} (layer {_layer(m)}) imports {target} (layer {_layer(target)})"
            for m, path in modules.items() if m != "unlearn_jax"
            for target, _ in _imports(path, modules) if _layer(target) > _layer(m)]
  assert not upward, "\n".join(upward)


def test_module_level_imports_have_no_cycle():
  modules = _modules()
  graph = {m: {t for t, top in _imports(p, modules) if top and t in modules and t != m}
           for m, p in modules.items()}
  # A package's __init__ importing its own submodules is not a cycle through them.
  for m in graph:
    graph[m] = {t for t in graph[m] if not (t.startswith(m + ".") and modules[m].name ==
                                            "__init__.py")}
  state: dict[str, int] = {}

  def visit(m: str, path: list[str]) -> None:
    state[m] = 1
    for t in graph[m]:
      if state.get(t) == 1:
        raise AssertionError("import cycle: " + " → ".join([*path[path.index(t):], t]))
      if t not in state:
        visit(t, [*path, t])
    state[m] = 2

  for m in graph:
    if m not in state:
      visit(m, [m])
