"""The shape the redesign promised, kept: small modules, few long functions, no import cycle, and the
architecture named in a handful of places (everything else asks its spec)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("aunet", "analysis", "sweeps", "hydra_plugins")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_LONG_FUNCTIONS = 3
MAX_ARCH_NAME_COMPARISONS = 5
ARCH_NAME_COMPARISON = re.compile(
    r"""\barch\s*(==|!=)|\barch\s+(not\s+)?in\s+\(|startswith\(["'](aunet|transformer|mamba)|"""
    r"""(==|!=)\s*["'](aunet|transformer|mamba)["']|["'](aunet|transformer|mamba)["']\s*(==|!=)""")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            continue
        yield child
        yield from runtime_nodes(child)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """First-party modules ``name`` imports anywhere in its file (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.add(target if target in known else base)
    return {m for m in out if m in known and m != name}


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_at_most_three_functions_are_over_60_lines_and_each_says_why():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append((f"{name}.{node.name}", length, ast.get_docstring(node)))
    assert len(long) <= MAX_LONG_FUNCTIONS, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
    assert all(doc for _, _, doc in long), f"a long function needs a docstring saying why: {long}"


def test_no_import_cycle_between_first_party_modules():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    # A package importing its own submodules (to register or re-export them) is how packages work;
    # a submodule importing its package back is the cycle this test catches.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_sweeps_and_models_stay_in_their_layers():
    known = modules()
    for name, path in known.items():
        deps = imports(name, path, known)
        if name.startswith("aunet"):
            assert not {d for d in deps if d.split(".")[0] in ("analysis", "sweeps")}, (name, deps)
        if name.startswith("sweeps"):
            assert not {d for d in deps if d.startswith("analysis")}, (name, deps)
        if name.startswith("analysis"):
            assert not {d for d in deps if d.startswith("sweeps")}, (name, deps)
        if name.startswith("aunet.archs"):  # specs know neither the configs nor the models (no torch to plan)
            assert not {d for d in deps if d.startswith(("aunet.config", "aunet.models"))}, (name, deps)


def test_architecture_names_are_compared_in_at_most_five_places():
    places = [f"{name}:{i}" for name, path in modules().items() if not name.startswith("aunet.archs")
              for i, line in enumerate(path.read_text().splitlines(), 1)
              if ARCH_NAME_COMPARISON.search(line.split("#")[0])]
    assert len(places) <= MAX_ARCH_NAME_COMPARISONS, places


def test_planning_a_model_loads_no_torch():
    """Configs, specs, FLOPs, memory and the ladder are what a dry run plans with: torch stays unloaded."""
    code = ("import sys, aunet.config, aunet.archs, aunet.flops, aunet.memory, aunet.ladder; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stdout + done.stderr
