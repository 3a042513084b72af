"""The layout shows the architecture (README: How the code is laid out): imports run only down,
pages -> signup -> access -> ops -> engage, store, i18n, and no two modules import each other,
whether at the top of a file or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

WEBAPP = Path(__file__).resolve().parent.parent / "webapp"
# Higher imports lower, never the other way; the same level imports its own package only.
LEVELS = {"pages": 5, "signup": 4, "access": 3, "ops": 2, "engage": 1, "store": 1, "i18n": 1}
TOP = {"webapp", "webapp.config", "webapp.serve", "webapp.training"}  # the factory's level


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(WEBAPP.rglob("*.py")):
        parts = path.relative_to(WEBAPP.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The webapp modules `name` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("webapp"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("webapp"):
                source = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in known else source)
    return {m for m in found if m in known and m != name}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "webapp"


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_imports_only_run_down_the_layers():
    wrong = []
    for module, targets in graph().items():
        if module in TOP:
            continue
        here = part(module)
        for target in targets:
            there = part(target)
            if target in TOP and target != "webapp.config":
                wrong.append(f"{module} -> {target} (the factory's level)")
            elif here == "simulator" or there == "simulator":
                if here != there:
                    wrong.append(f"{module} -> {target} (the simulator stands alone)")
            elif here != there and LEVELS.get(there, 0) >= LEVELS.get(here, 0):
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports that run up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_two_modules_import_each_other_even_through_others():
    edges = graph()
    cycles = []

    def visit(node, path, on_path):
        for target in edges[node]:
            if target in on_path:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in done:
                visit(target, [*path, target], on_path | {target})
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start], {start})
    assert cycles == [], "import circles:\n" + "\n".join(sorted(set(cycles)))


def test_the_checker_sees_an_import_that_runs_up(tmp_path, monkeypatch):
    """The checks above would catch an upward import written inside a function."""
    name = "webapp.ops.web"
    source = modules()[name].read_text() + "\n\ndef _late():\n    from ..pages import views\n"
    planted = tmp_path / "web.py"
    planted.write_text(source)
    found = imports(name, planted, set(modules()))
    assert "webapp.pages.views" in found
