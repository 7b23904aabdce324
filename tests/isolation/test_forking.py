"""The fork server imports, once, every module a job's child imports at run time."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from opsagent.isolation import child, forking


def _module_of(module: str, name: str) -> str:
    """The module ``from module import name`` imports: ``module.name`` when a module."""
    try:
        return f"{module}.{name}" if importlib.util.find_spec(f"{module}.{name}") else module
    except ModuleNotFoundError:  # ``module`` is not a package
        return module


def runtime_imports(path: Path) -> set[str]:
    """Modules imported inside functions of ``path`` (what each job would import)."""
    found: set[str] = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                # ``from opsagent.isolation import execute`` imports opsagent.isolation.execute.
                found.update(_module_of(node.module, a.name) for a in node.names)
    return found


def test_every_module_a_job_imports_at_run_time_is_preloaded() -> None:
    needed = runtime_imports(Path(child.__file__))
    assert {"opsagent.isolation.execute", "opsagent.schema", "loguru"} <= needed  # the parser works
    assert needed <= set(forking.CHILD_MODULES)
