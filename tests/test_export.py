"""The library is the product of the notebooks: in sync with them, layered like them, one name per thing."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import transformer_lib

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = ROOT / "tools" / "export.py"
sys.path.insert(0, str(EXPORTER.parent))
import export  # noqa: E402  (tools/ is not a package; the exporter is a script)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MODULES = {rendered[0]: nb for nb in NOTEBOOKS if (rendered := export.render(nb)) is not None}
ORDER = {module: index for index, module in enumerate(MODULES)}


def test_every_notebook_writes_a_module():
    assert NOTEBOOKS, "no notebooks found"
    assert len(MODULES) == len(NOTEBOOKS), "a notebook names no module with `#| default_exp`"


def test_library_matches_notebooks():
    result = subprocess.run([sys.executable, str(EXPORTER), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_without_a_notebook():
    generated = {p.stem for p in (ROOT / "transformer_lib").glob("*.py") if p.stem != "__init__"}
    orphans = generated - set(MODULES)
    assert not orphans, f"modules with no notebook that writes them: {sorted(orphans)}"


@pytest.mark.parametrize("module", list(MODULES))
def test_generated_header_names_the_notebook(module):
    first_line = (ROOT / "transformer_lib" / f"{module}.py").read_text().splitlines()[0]
    assert f"notebooks/{MODULES[module].name}" in first_line and "DO NOT EDIT" in first_line


def _defined_names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


@pytest.mark.parametrize("module", list(MODULES))
def test_no_name_defined_twice(module):
    names = _defined_names(ast.parse((ROOT / "transformer_lib" / f"{module}.py").read_text()))
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"transformer_lib/{module}.py defines {twice} twice; keep drafts in the notebook only"


def test_no_public_name_in_two_modules():
    owners: dict[str, str] = {}
    for module in MODULES:
        for name in importlib.import_module(f"transformer_lib.{module}").__all__:
            assert name not in owners, f"{name} is defined in both {owners[name]} and {module}"
            owners[name] = module


def _imported_library_modules(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transformer_lib"):
            found.add(node.module.removeprefix("transformer_lib").lstrip("."))
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("transformer_lib.")}
    return found


@pytest.mark.parametrize("module", list(MODULES))
def test_modules_import_only_earlier_chapters(module):
    imported = _imported_library_modules(ast.parse((ROOT / "transformer_lib" / f"{module}.py").read_text()))
    assert "" not in imported, f"{module} imports the package root; import the module that defines the name"
    later = sorted(m for m in imported if ORDER.get(m, len(ORDER)) >= ORDER[module])
    assert not later, f"transformer_lib/{module}.py imports {later}, which no earlier notebook writes"


def test_package_lists_the_whole_public_api():
    public = set()
    for module in MODULES:
        public |= set(importlib.import_module(f"transformer_lib.{module}").__all__)
    assert set(transformer_lib.__all__) == public
    for name in transformer_lib.__all__:
        assert getattr(transformer_lib, name) is not None


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_fixes_seed_and_threads(notebook):
    code = [
        "".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"
    ]
    setup = "\n".join(code[:3])
    assert "torch.manual_seed(" in setup and "torch.set_num_threads(1)" in setup, (
        f"{notebook.name}: its setup cell must seed torch and fix one thread"
    )


def test_exporter_finds_stale_module(tmp_path, monkeypatch):
    notebook = {
        "cells": [
            {"cell_type": "code", "source": "#| default_exp demo", "metadata": {}, "outputs": []},
            {"cell_type": "code", "source": "#| export\ndef f():\n    return 1", "metadata": {}},
            {"cell_type": "code", "source": "f()", "metadata": {}, "outputs": []},
        ]
    }
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "transformer_lib").mkdir()
    (tmp_path / "notebooks" / "01_demo.ipynb").write_text(json.dumps(notebook))
    monkeypatch.setattr(export, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(export, "LIBRARY", tmp_path / "transformer_lib")
    monkeypatch.setattr(sys, "argv", ["export.py"])
    assert export.main() == 0
    written = (tmp_path / "transformer_lib" / "demo.py").read_text()
    assert '__all__ = ["f"]' in written and written.endswith("def f():\n    return 1\n")
    (tmp_path / "transformer_lib" / "demo.py").write_text(written + "\nx = 2\n")
    monkeypatch.setattr(sys, "argv", ["export.py", "--check"])
    assert export.main() == 1
