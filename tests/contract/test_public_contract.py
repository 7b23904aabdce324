"""The contract is closed: capabilities use only what ``opsagent`` exports.

A capability's code -- the bundled plugins, the template ``opsagent new`` bakes, the
documentation's examples -- imports from ``opsagent`` only the names of its ``__all__``;
its tests may also use the testing kit, ``opsagent.testing`` (the names of its
``__all__``).  Every other module of the host is internal and may change without notice.
The contract modules themselves (``core/opsagent/*.py``) import nothing from the host's
packages, so the arrow points one way: the host depends on the contract, never back.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import opsagent
import opsagent.testing
import pytest
from cookiecutter.main import cookiecutter
from support import ROOT

CORE = ROOT / "core" / "opsagent"
#: The host's packages: what a contract module must not import.
HOST_PACKAGES = ("host", "isolation", "credentials", "reporting", "cli", "builtin", "transport")
#: What the export surface (``opsagent/__init__.py``) re-exports from inside the host, and
#: why: the bounded program runner lives with the job processes it also serves; it is a
#: leaf (it imports no opsagent module, checked below), so importing it drags no host in.
REEXPORTED = {"opsagent.isolation.proc"}

SOURCE = frozenset(opsagent.__all__)
TESTS = SOURCE | {"testing"}
KIT = frozenset(opsagent.testing.__all__)


def imports(tree: ast.AST) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, name)`` of every absolute import, in functions too
    (``import opsagent.x``: name ``None``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def non_public(tree: ast.AST, *, test_code: bool) -> list[str]:
    """The imports of ``tree`` that reach past the public contract."""
    bad = []
    for line, module, name in imports(tree):
        if module != "opsagent" and not module.startswith("opsagent."):
            continue
        if module == "opsagent" and name is not None:
            ok = name in (TESTS if test_code else SOURCE)
        elif module == "opsagent.testing" and test_code:
            ok = name is None or name in KIT
        else:
            ok = module == "opsagent" or (test_code and module == "opsagent.testing")
        if not ok:
            bad.append(f"line {line}: {module}" + (f".{name}" if name else ""))
    return bad


def parsed(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def plugin_files(part: str) -> list[Path]:
    return sorted(ROOT.glob(f"plugins/*/{part}/**/*.py"))


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The template baked with cookiecutter's defaults, with and without credentials
    (its Jinja branches differ)."""
    base = tmp_path_factory.mktemp("contract-template")
    config = base / "config.yaml"
    config.write_text(f"replay_dir: {base / 'replay'}\ncookiecutters_dir: {base / 'cc'}\n")
    return [
        Path(
            cookiecutter(
                str(ROOT / "templates" / "capability"),
                no_input=True,
                extra_context={"needs_credentials": needs, "msg_type": f"contract_{needs}"},
                output_dir=str(base / needs),
                config_file=str(config),
            )
        )
        for needs in ("no", "yes")
    ]


def test_the_test_walks_what_it_should() -> None:
    # A glob that finds nothing would make every test here pass vacuously.
    assert len(plugin_files("src")) >= 10 and len(plugin_files("tests")) >= 10
    bad = ast.parse("from opsagent.host.plugins import load\nimport opsagent.schema\n")
    assert non_public(bad, test_code=True) == [
        "line 1: opsagent.host.plugins.load",
        "line 2: opsagent.schema",
    ]
    sneaky = ast.parse(
        "from opsagent import schema, Job\ndef f():\n    from opsagent import testing"
    )
    assert non_public(sneaky, test_code=False) == [
        "line 1: opsagent.schema",
        "line 3: opsagent.testing",
    ]
    ok = ast.parse("from opsagent import Job, testing\nfrom opsagent.testing import make_job")
    assert non_public(ok, test_code=True) == []


def test_the_bundled_plugins_use_only_the_public_contract() -> None:
    found = {
        str(path.relative_to(ROOT)): bad
        for path in plugin_files("src")
        if (bad := non_public(parsed(path), test_code=False))
    }
    assert found == {}


def test_the_bundled_plugins_tests_use_only_the_contract_and_the_testing_kit() -> None:
    found = {
        str(path.relative_to(ROOT)): bad
        for path in plugin_files("tests")
        if (bad := non_public(parsed(path), test_code=True))
    }
    assert found == {}


def test_the_template_generates_code_that_uses_only_the_public_contract(
    baked: list[Path],
) -> None:
    found = {}
    for package in baked:
        files = sorted(package.rglob("*.py"))
        assert any(p.parts[-2] == "tests" for p in files) and len(files) >= 3
        for path in files:
            is_test = "tests" in path.relative_to(package).parts
            if bad := non_public(parsed(path), test_code=is_test):
                found[str(path.relative_to(package.parent))] = bad
    assert found == {}


def test_the_documentation_examples_use_only_the_public_contract() -> None:
    found = {}
    pages = sorted((ROOT / "docs").glob("*.md"))
    blocks = 0
    for page in pages:
        for match in re.finditer(r"```python\n(.*?)```", page.read_text(), re.S):
            blocks += 1
            line = page.read_text()[: match.start()].count("\n") + 2
            if bad := non_public(ast.parse(match.group(1)), test_code=True):
                found[f"{page.name} (block at line {line})"] = bad
    assert blocks >= 3
    assert found == {}


def test_the_contract_modules_import_nothing_from_the_host() -> None:
    contract = sorted(CORE.glob("*.py"))
    assert {"capability.py", "job.py", "hookspecs.py", "checks.py", "credential.py"} <= {
        p.name for p in contract
    }
    found = {}
    for path in contract:
        reached = set()
        for line, module, name in imports(parsed(path)):
            full = f"{module}.{name}" if module == "opsagent" and name else module
            parts = full.split(".")
            if parts[0] == "opsagent" and len(parts) > 1 and parts[1] in HOST_PACKAGES:
                reached.add((line, full))
        if path.name == "__init__.py":
            reached = {(line, m) for line, m in reached if m not in REEXPORTED}
        if reached:
            found[path.name] = sorted(reached)
    assert found == {}
    for module in REEXPORTED:
        leaf = CORE.joinpath(*module.split(".")[1:]).with_suffix(".py")
        assert [m for _, m, _ in imports(parsed(leaf)) if m.startswith("opsagent")] == []


def test_every_exported_name_is_in_the_guide() -> None:
    guide = (ROOT / "docs" / "writing-a-capability.md").read_text()
    section = guide.split("## The public contract", 1)[-1].split("\n## ", 1)[0]
    assert [name for name in opsagent.__all__ if f"`{name}`" not in section] == []
