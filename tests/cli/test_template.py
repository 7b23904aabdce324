"""The capability template, baked with cookiecutter's API: the distribution it generates
installs, passes its own tests and lint, and the host lists it.

A template change that breaks the generated package fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from support import ROOT

pytestmark = pytest.mark.slow

TEMPLATE = ROOT / "templates" / "capability"
BIN = Path(sys.executable).parent
VARIANTS = {
    # One without credentials, one with two (one of them with a dot in its name).
    "scaffold_probe": {"needs_credentials": "no"},
    "scaffold_probe_creds": {"needs_credentials": "yes", "credentials": "probe_token, probe.cert"},
}


def bake(output: Path, config: Path, **answers: str) -> Path:
    return Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=answers,
            output_dir=str(output),
            config_file=str(config),
        )
    )


@pytest.fixture(scope="module")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cookiecutter config that keeps its replay files out of $HOME."""
    base = tmp_path_factory.mktemp("cookiecutter")
    config = base / "config.yaml"
    config.write_text(
        f"replay_dir: {base / 'replay'}\ncookiecutters_dir: {base / 'cookiecutters'}\n"
    )
    return config


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("baked")
    return {
        msg_type: bake(
            out,
            cookiecutter_config,
            name=msg_type.replace("_", " "),
            msg_type=msg_type,
            author="Template Test",
            author_email="ops@example.org",
            description="Probe the capability template",
            **answers,
        )
        for msg_type, answers in VARIANTS.items()
    }


@pytest.fixture(scope="module")
def installed(baked: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """The baked distributions installed into this venv, and uninstalled afterwards."""
    dists = [path.name for path in baked.values()]
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *map(str, baked.values())],
            check=True,
            capture_output=True,
        )
        yield baked
    finally:
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "-y", "-q", *dists], capture_output=True
        )


def test_it_generates_a_whole_distribution(baked: dict[str, Path]) -> None:
    path = baked["scaffold_probe_creds"]
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == [
        ".github/workflows/ci.yml",
        ".gitignore",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "samples/scaffold_probe_creds-dry-run.json",
        "samples/scaffold_probe_creds.json",
        "src/opsagent_scaffold_probe_creds/__init__.py",
        "src/opsagent_scaffold_probe_creds/work.py",
        "tests/test_scaffold_probe_creds.py",
    ]
    pyproject = (path / "pyproject.toml").read_text()
    assert 'name = "opsagent-scaffold-probe-creds"' in pyproject
    assert '[project.entry-points."opsagent.capabilities"]' in pyproject
    assert 'scaffold_probe_creds = "opsagent_scaffold_probe_creds"' in pyproject
    assert 'email = "ops@example.org"' in pyproject
    readme = (path / "README.md").read_text()
    assert "| credentials | `probe_token`, `probe.cert` |" in readme
    assert '[credentials."probe.cert"]' in readme  # a dotted name is one TOML key


def test_the_generated_code_is_lint_clean_and_formatted(baked: dict[str, Path]) -> None:
    for path in baked.values():
        lint = subprocess.run(
            [str(BIN / "ruff"), "check", "--no-cache", "."],
            cwd=path,
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout
        fmt = subprocess.run(
            [str(BIN / "ruff"), "format", "--no-cache", "--check", "--diff", "."],
            cwd=path,
            capture_output=True,
            text=True,
        )
        assert fmt.returncode == 0, fmt.stdout


def test_the_ci_workflow_lints_tests_and_builds(baked: dict[str, Path]) -> None:
    workflow = yaml.safe_load((baked["scaffold_probe"] / ".github/workflows/ci.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    commands = [
        "python -m build",
        'python -m venv "$RUNNER_TEMP/clean"',  # the built wheel alone, in a fresh venv
        'pip install "$(ls dist/*.whl)[test]"',
        "pip check",
        "ruff check .",
        "pytest",
    ]
    at = [next((i for i, run in enumerate(runs) if c in run), None) for c in commands]
    assert None not in at and at == sorted(at), (commands, runs)
    assert workflow["jobs"]["test"]["env"]["PIP_EXTRA_INDEX_URL"] == (
        "${{ vars.OPSAGENT_INDEX_URL }}"
    )


def test_installed_it_passes_its_own_tests_and_the_host_lists_it(
    installed: dict[str, Path],
) -> None:
    for msg_type, path in installed.items():
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout[-3000:]
        expected = 10 if VARIANTS[msg_type]["needs_credentials"] == "yes" else 8
        assert f"{expected} passed" in run.stdout, run.stdout[-1000:]

    listed = subprocess.run(
        [str(BIN / "opsagent"), "plugins", "--json"], check=True, capture_output=True, text=True
    )
    rows = {row["msg_type"]: row for row in json.loads(listed.stdout)}
    assert rows["scaffold_probe"]["distribution"] == "opsagent-scaffold-probe"
    assert rows["scaffold_probe"]["status"] == "ok"
    assert rows["scaffold_probe_creds"]["credentials"] == ["probe_token", "probe.cert"]


def selftest(config: Path, msg_type: str) -> tuple[int, list[dict[str, str]]]:
    done = subprocess.run(
        [str(BIN / "opsagent"), "--config", str(config), "selftest", "--capability", msg_type]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)["checks"]


def test_installed_it_passes_selftest_once_its_credentials_are_configured(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "opsagent.toml"
    host = f'[host]\ncache_dir = "{tmp_path / "cache"}"\nstate_dir = "{tmp_path / "state"}"\n'
    config.write_text(host)
    for msg_type in installed:
        status, checks = selftest(config, msg_type)
        mine = [c for c in checks if c["subject"] == msg_type]
        if VARIANTS[msg_type]["needs_credentials"] == "no":
            assert status == 0, checks
            assert [c["check"] for c in mine] == ["declaration", "sample 1", "sample 2"]
        else:
            # Not configured yet: selftest fails and names each missing credential.
            assert status == 1
            failed = {c["check"] for c in mine if c["status"] == "fail"}
            assert failed == {"credential probe_token", "credential probe.cert"}, mine

    for name in ("probe_token", "probe.cert"):
        (tmp_path / name).touch(mode=0o600)
        (tmp_path / name).write_text("fake")
    config.write_text(
        host
        + f'[credentials.probe_token]\nfile = "{tmp_path / "probe_token"}"\n'
        + f'[credentials."probe.cert"]\nfile = "{tmp_path / "probe.cert"}"\n'
    )
    status, checks = selftest(config, "scaffold_probe_creds")
    assert status == 0, checks
    # All well, but open to anyone who can write to the queue until allow_users says who.
    assert {c["status"] for c in checks if c["subject"] != "access"} == {"ok"}, checks
    assert [(c["check"], c["status"]) for c in checks if c["subject"] == "access"] == [
        ("scaffold_probe_creds", "warn")]


def test_the_generated_tests_fail_when_the_work_is_broken(
    baked: dict[str, Path], tmp_path: Path, cookiecutter_config: Path
) -> None:
    # The generated tests are a specification, not a formality: break the work function
    # of a fresh copy and they must fail.
    path = bake(tmp_path, cookiecutter_config, msg_type="scaffold_probe_broken")
    work = path / "src" / "opsagent_scaffold_probe_broken" / "work.py"
    work.write_text(work.read_text().replace("changed=False", "changed=True"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "records"],
        cwd=path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(path / "src")},
        timeout=60,
    )
    assert run.returncode == 1, run.stdout[-2000:]
    assert "1 failed" in run.stdout


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ({"msg_type": "Bad-Name"}, "msg_type: expected lower_snake_case"),
        ({"msg_type": "health_ping"}, "'health_ping' is reserved for the host"),
        ({"msg_type": "x" * 58}, "msg_type: at most 57 characters"),
        ({"needs_credentials": "yes", "credentials": "a b"}, "'a b' is not a credential name"),
        ({"needs_credentials": "yes", "credentials": " , "}, "give at least one name"),
        ({"time_limit": "0"}, "time_limit: expected a positive number"),
        ({"time_limit": "nan"}, "time_limit: expected a positive number"),
    ],
)
def test_answers_the_host_would_refuse_generate_nothing(
    answers: dict[str, str],
    reason: str,
    tmp_path: Path,
    cookiecutter_config: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(FailedHookException):
        bake(tmp_path, cookiecutter_config, **answers)
    assert reason in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []
