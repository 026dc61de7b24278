"""The layers import one way only (DEVELOPERS.md): the engine is the runtime under everything, the editor and the
command line sit on it, and nothing in the engine or the editor reads the test suite's files. Every import counts,
the ones inside functions too."""

import ast
from pathlib import Path

import pytest
from conftest import ROOT

QT = ("PySide6", "PyQt5", "PyQt6", "PySide2")
FORBIDDEN = {
    # folder: modules its code must never import (a name forbids the module and everything below it)
    "engine": ("app", "training", "tests", "engine.cli", *QT),  # the runtime (engine/cli is not part of it)
    "engine/cli": ("app", "training", "tests", *QT),  # the command line, on the runtime
    "app": ("engine.cli", "engine.bench", "engine.bench_app", "training", "tests"),  # the Qt editor, on the runtime
}


def files(folder: str) -> list[Path]:
    """The .py files of a layer: below the folder, less the layers nested in it (engine/cli in engine)."""
    nested = [ROOT / f for f in FORBIDDEN if f != folder and f.startswith(folder + "/")]
    return sorted(p for p in (ROOT / folder).rglob("*.py") if not any(p.is_relative_to(n) for n in nested))


def imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, modules) of every import statement in a file, at any depth, relative ones resolved against its package.
    `from engine import cli` may import the module engine.cli: each imported name counts as a module too."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.append((node.lineno, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((node.lineno, [module] + [f"{module}.{a.name}" for a in node.names]))
    return out


def violations(folder: str) -> list[str]:
    found = []
    for path in files(folder):
        for line, modules in sorted(imports(path)):
            bad = [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN[folder])]
            if bad:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {bad[0]}")
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_go_one_way(folder):
    assert violations(folder) == []


def test_no_runtime_code_reads_the_tests_folder():
    """The engine and the editor ship without tests/: no path into it, spelt in any way."""
    found = []
    for package in ("engine", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                        node.value in ("tests", "fixtures") or "tests/" in node.value or "fixtures/" in node.value):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []


def test_the_check_sees_what_it_must(tmp_path, monkeypatch):
    """A checker that cannot fail is no check: a module with each kind of forbidden import is caught."""
    pkg = tmp_path / "engine"
    (pkg / "edit").mkdir(parents=True)
    (pkg / "edit" / "bad.py").write_text(
        "import os\n"
        "from PySide6.QtCore import QObject\n"
        "def later():\n"
        "    import training.distill\n"
        "    from engine.cli.sweep import run\n"
        "    from .. import cli\n"
        "    from engine import cli as c2\n"
    )
    (pkg / "cli").mkdir()
    (pkg / "cli" / "ok.py").write_text("from engine.cli.common import load_model\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "ok.py").write_text("from engine.edit import EditSession\nimport engine.client\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = violations("engine")
    assert [f.split(" imports ")[1] for f in found] == [
        "PySide6.QtCore", "training.distill", "engine.cli.sweep", "engine.cli", "engine.cli"]
    assert violations("engine/cli") == [] and violations("app") == []
