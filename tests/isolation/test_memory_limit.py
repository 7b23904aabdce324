"""The memory limit of process jobs: declared, configured, defaulted, and what a job over
it ends with.  Jobs run as real processes (``python -m opsagent.isolation.child``, the fork
server's child path); the host-level test is in test_resources.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from opsagent.capability import MIN_MEMORY_LIMIT, Capability, DeclarationError
from opsagent.host import config as configuration
from opsagent.isolation.jobs import effective
from support import SITECAPS


@attrs.frozen
class Nothing:
    pass


def declare(**kw: Any) -> Capability:
    return Capability(msg_type="x_job", input=Nothing, doer=lambda inp, job: None,
                      events={"ok": "x_done", "error": "x_failed"}, **kw)


@pytest.mark.parametrize("value", [None, 0, MIN_MEMORY_LIMIT, 4096])
def test_a_declared_memory_limit_is_mib_zero_for_none_or_none_for_the_default(value) -> None:
    assert declare(memory_limit=value).memory_limit == value


@pytest.mark.parametrize("value", [-1, 1, MIN_MEMORY_LIMIT - 1, 1.5, "512", True])
def test_a_memory_limit_below_the_floor_or_not_an_integer_is_refused(value) -> None:
    with pytest.raises(DeclarationError, match=rf"memory_limit: expected .* got {value!r}"):
        declare(memory_limit=value)


def test_a_thread_job_cannot_have_a_memory_limit() -> None:
    with pytest.raises(DeclarationError, match="memory_limit: a thread job runs in the host"):
        declare(memory_limit=512, isolation="thread")


def test_the_host_default_and_a_capability_override_come_from_the_config(tmp_path) -> None:
    path = tmp_path / "host.toml"
    path.write_text("[host]\njob_memory_limit_mb = 1024\n"
                    "[capability.x_job]\nmemory_limit = 768\n")
    cfg = configuration.load(path)
    assert cfg.host.job_memory_limit_mb == 1024
    assert configuration.HostConfig().job_memory_limit_mb == 2048
    assert effective(declare(), cfg).memory_limit == 768
    assert configuration.section_table(cfg, "x_job") == {}  # not the capability's own key
    path.write_text("[host]\njob_memory_limit_mb = 100\n")
    with pytest.raises(configuration.ConfigError, match="job_memory_limit_mb: expected"):
        configuration.load(path)


def run_child(tmp_path: Path, inp: dict[str, Any], memory_limit: int | None) -> dict[str, Any]:
    """One ``test_hog`` job through ``python -m opsagent.isolation.child``, as the host runs it."""
    result = tmp_path / "result.json"
    spec = {"module": "opsagent_testcaps", "msg_type": "test_hog", "input": inp,
            "job_id": "hog-1", "cache_dir": str(tmp_path), "time_limit": 30,
            "memory_limit": memory_limit, "result": str(result)}
    done = subprocess.run([sys.executable, "-m", "opsagent.isolation.child"],
                          input=json.dumps(spec),
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SITECAPS)})
    assert done.returncode == 0, done.stderr
    return json.loads(result.read_text())


def test_a_job_runs_under_its_limit_and_is_offered_to_the_oom_killer_first(tmp_path) -> None:
    out = run_child(tmp_path, {"mb": 64}, 512)
    assert out["status"] == "ok", out
    assert out["data"]["rlimit_as"] == 512 << 20
    assert out["data"]["oom_score_adj"] == 500


def test_an_allocation_over_the_limit_ends_the_job_with_a_reason(tmp_path) -> None:
    out = run_child(tmp_path, {"mb": 1024}, 512)
    assert out["status"] == "error", out
    assert out["reason"] == "ran out of memory: over its 512 MiB limit (memory_limit)"
    # Without a limit the same job holds its gigabyte.
    assert run_child(tmp_path, {"mb": 1024}, 0)["status"] == "ok"


def test_programs_the_job_starts_inherit_the_limit(tmp_path) -> None:
    out = run_child(tmp_path, {"mb": 1024, "program": True}, 512)
    assert out["status"] == "error", out
    assert out["reason"] == "program failed: MemoryError"


def test_opsagent_plugins_shows_each_process_capability_s_limit(tmp_path) -> None:
    path = tmp_path / "host.toml"
    path.write_text("[host]\njob_memory_limit_mb = 3072\n[capability.test_hog]\n"
                    "memory_limit = 512\n")
    done = subprocess.run([sys.executable, "-m", "opsagent.cli.main", "--config", str(path),
                           "plugins", "--json"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SITECAPS)})
    assert done.returncode == 0, done.stderr
    shown = {r["msg_type"]: r["memory_limit_mb"] for r in json.loads(done.stdout)}
    assert shown["test_hog"] == 512
    assert shown["test_sleep"] == 3072
    assert shown["test_echo"] is None and shown["shutdown"] is None  # thread, inline
