"""The package's rooms: no module imports another's private names, no import cycle (lazy imports in
functions included), and the task bodies of the transfer DAG stay under 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "hdh_migration"


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """Each module's imports of the package (wherever they sit): (module imported, names imported)."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        entries = found.setdefault(path.stem, [])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "hdh_migration":
                names = [alias.name for alias in node.names]
                if node.module == "hdh_migration":  # from hdh_migration import metrics
                    entries.extend((name, []) for name in names)
                else:
                    entries.append((node.module.split(".")[1], names))
    return found


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{module} imports {name} from {imported}"
        for module, entries in _imports().items()
        for imported, names in entries
        for name in names
        if name.startswith("_") and imported != module
    ]
    assert private == []


def test_no_import_cycle_even_through_lazy_imports():
    graph = {
        module: {imported for imported, _ in entries if imported != module} for module, entries in _imports().items()
    }
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                cycles.append(" -> ".join(path[path.index(imported) :] + [imported]))
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []


def test_the_transfer_task_bodies_stay_under_400_lines():
    lines = len((PACKAGE / "transfer.py").read_text(encoding="utf-8").splitlines())
    assert lines < 400, f"transfer.py has {lines} lines: move a concept to its own module"


def test_every_module_imports():
    """A name removed from one module and still imported by another fails here, not in a worker."""
    import importlib

    for path in sorted(PACKAGE.glob("*.py")):
        importlib.import_module(f"hdh_migration.{path.stem}" if path.stem != "__init__" else "hdh_migration")
