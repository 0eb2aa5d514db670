"""The house by role, checked: no import cycle in the harness, small functions and modules, tests that stand alone.

The import-linter contracts in pyproject.toml (run by .ci/run) check which package may import which; this
module checks what they cannot: cycles, sizes, and that the report loads without torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import PROJECT

HARNESS = PROJECT / "harness"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def runtime_imports(path: Path) -> set[str]:
    """The harness modules a module imports when it runs (anywhere in it, imports for the type checker left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return {name for name in found if name in MODULES}


def test_no_import_cycle_among_harness_modules():
    graph = {name: runtime_imports(path) - {name} for name, path in MODULES.items()}
    cycles, state = [], {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert graph["harness.cli"], "the graph was not read: the CLI imports nothing?"
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_no_function_over_60_lines_and_no_module_over_400():
    long_functions, long_modules = [], []
    for name, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name} ({len(source.splitlines())} lines)")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name} ({lines} lines)")
    assert not long_functions, "functions over 60 lines: " + ", ".join(long_functions)
    assert not long_modules, "modules over 400 lines: " + ", ".join(long_modules)


def test_no_test_module_imports_another():
    shared = {"tests.helpers", "tests.conftest"}
    offenders = []
    for path in sorted((PROJECT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("tests") and module not in shared:
                offenders.append(f"{path.relative_to(PROJECT)} imports {module}")
    assert not offenders, "; ".join(offenders)


def test_the_leaderboard_loads_without_torch_or_the_judge():
    code = (
        "import sys, harness.report.leaderboard, harness.report.run_page\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('harness.judge', 'harness.trial'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, check=True)
    assert out.stdout.strip() == "[]"
