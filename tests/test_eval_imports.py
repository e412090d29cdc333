"""aunet.eval's modules import each other in one direction only, and never inside a function to dodge a loop."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import aunet.eval

EVAL_DIR = Path(aunet.eval.__file__).parent
#: Imports inside functions that are allowed: lm-evaluation-harness is optional (and lm_eval.tasks takes seconds).
OPTIONAL = {"lm_eval", "lm_eval.tasks", "aunet.eval.harness"}


def _imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(module imported, inside a function) for every import in ``tree``."""
    out = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in nested) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "aunet.eval" else [node.module]
            out += [(name, id(node) in nested) for name in names]
    return out


def test_eval_modules_form_no_loop_and_import_at_the_top():
    graph: dict[str, set[str]] = {}
    inside_functions = []
    for path in sorted(EVAL_DIR.glob("*.py")):
        module = "aunet.eval" if path.stem == "__init__" else f"aunet.eval.{path.stem}"
        imports = _imports(ast.parse(path.read_text()))
        graph[module] = {m for m, _ in imports if m.startswith("aunet.eval.") and m != module}
        inside_functions += [(module, m) for m, inside in imports if inside and m not in OPTIONAL]
    assert not inside_functions
    assert "aunet.eval.registry" in graph and "aunet.eval.codec" in graph
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"import loop in aunet.eval: {err.args[1]}") from None
    assert order.index("aunet.eval.fetch") < order.index("aunet.eval.registry") < order.index("aunet.eval.tasks")
    assert order.index("aunet.eval.codec") < order.index("aunet.eval.generation") < order.index("aunet.eval.scoring")
