"""The house inside optimix/: pure cores import no heavy library, imports only run down, and
each module and function stays small enough to read (docs/design.md, "The house")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "optimix"
HEAVY = ("torch", "ray", "mlflow", "transformers", "datasets", "optuna")
PURE_CORES = ["optimix.core.config", "optimix.core.space", "optimix.core.metrics", "optimix.core.budget", "optimix.core.flops",
              "optimix.core.pareto", "optimix.core.frontier", "optimix.core.fit", "optimix.core.logistic", "optimix.core.hardware",
              "optimix.core.faults", "optimix.core.regime"]
PUBLIC = ("os._exit",)  # documented API whose name starts with "_"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
MAX_TOP_LEVEL_MODULES = 12
# The parts, lowest first (docs/design.md, "The house"): a module imports only from its own
# part and the parts below it. ``optimix`` itself (cli, report) is the top.
PARTS = ("optimix.core", "optimix.trial", "optimix.records", "optimix.plan", "optimix.search", "optimix")


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


@pytest.mark.parametrize("module", PURE_CORES)
def test_a_pure_core_imports_no_heavy_library(module):
    pytest.importorskip(module)
    code = (f"import sys, {module}\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [], f"importing {module} imports {run.stdout.strip()}"


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere (top level or in a function)."""
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:  # optimix.core.space.Dimension -> optimix.core.space
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_optimix_modules():
    mods = modules()
    graph = {m: imports_of(m, p, set(mods)) for m, p in mods.items()}
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_modules_and_functions_stay_small():
    problems = []
    for path in modules().values():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE.parent)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            problems.append(f"{name}: {lines} lines (over {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{name}:{node.lineno} {node.name}: {length} lines "
                                    f"(over {MAX_FUNCTION_LINES})")
    assert not problems, "\n".join(problems)


def private_attribute_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """``x._name`` where ``x`` is not ``self`` or ``cls``: another object's private field."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                and ast.unparse(node) not in PUBLIC):
            out.append((node.lineno, ast.unparse(node)))
    return out


def test_the_private_field_finder_finds_them():
    found = private_attribute_uses(ast.parse("a = searcher._ot_study\nb = self._x\nc = obj.__dict__"))
    assert found == [(1, "searcher._ot_study")]


def test_no_module_reads_another_objects_private_fields():
    """No ``_ot_trials``, ``trial._trial_id`` or ``tracking._helper``: public APIs only."""
    problems = [f"{path.relative_to(PACKAGE.parent)}:{line} {text}"
                for path in modules().values()
                for line, text in private_attribute_uses(ast.parse(path.read_text(encoding="utf-8")))]
    assert not problems, "\n".join(problems)


def part_of(module: str) -> str:
    return next(p for p in PARTS if module == p or module.startswith(p + "."))


def test_the_part_finder_knows_each_part():
    assert part_of("optimix.core.flops") == "optimix.core"
    assert part_of("optimix.search") == "optimix.search"
    assert part_of("optimix.cli") == "optimix"
    assert PARTS.index(part_of("optimix.trial.train")) < PARTS.index(part_of("optimix.records.tracking"))


def test_imports_run_only_down_the_parts():
    """core <- trial <- records <- plan <- search <- cli: nothing imports a part above its own."""
    mods = modules()
    problems = []
    for module, path in mods.items():
        rank = PARTS.index(part_of(module))
        for imported in sorted(imports_of(module, path, set(mods))):
            if PARTS.index(part_of(imported)) > rank:
                problems.append(f"{module} ({part_of(module)}) imports {imported} ({part_of(imported)})")
    assert not problems, "\n".join(problems)


def test_the_top_level_shows_the_parts():
    """At most a dozen modules beside the parts' folders, and each part says what lives there
    and what it may import."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    for part in PARTS[:-1]:
        init = PACKAGE / part.split(".")[1] / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc or "import" in doc.lower(), f"{init}: no docstring saying what it may import"

