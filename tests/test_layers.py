"""Layering (docs/architecture.md): task modules import library layers only, never another task module; the
library layers below the tasks never import the tasks or the launcher."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "nas_jax"
BELOW_TASKS = ("data", "models", "train", "attacks", "analysis", "search", "study", "report")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("path", sorted((PKG / "tasks").glob("*.py")), ids=lambda p: p.name)
def test_a_task_module_imports_no_other_task_module(path):
    task_modules = {f"nas_jax.tasks.{p.stem}" for p in (PKG / "tasks").glob("*.py") if p.stem != "__init__"}
    wrong = sorted(n for n in _imports(path) if n in task_modules and n != f"nas_jax.tasks.{path.stem}")
    assert not wrong, f"{path.name} imports task modules {wrong}; move what they share to nas_jax/study/"


def test_library_layers_do_not_import_tasks_or_the_launcher():
    offenders = {}
    for layer in BELOW_TASKS:
        for path in (PKG / layer).glob("*.py"):
            bad = sorted(n for n in _imports(path) if n == "nas_jax.tasks" or n.startswith(("nas_jax.tasks.", "launch")))
            if bad:
                offenders[f"{layer}/{path.name}"] = bad
    assert not offenders, offenders
