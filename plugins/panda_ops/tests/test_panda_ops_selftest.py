"""``opsagent selftest`` for the PanDA operations: the budget, the operator's token, the
monitor reachable; with ``--live`` PanDA answering an authenticated panda-client call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from opsagent.testing import FakeMonitor, FakePanda, toml_text
from panda_ops_support import MONITOR_TOKEN, token_file_bytes


def selftest(
    tmp_path: Path, token: Path, monitor_url: str, panda: FakePanda, *args: str
) -> dict[tuple[str, str], tuple[str, str]]:
    secret = tmp_path / "monitor_token"
    secret.write_text(MONITOR_TOKEN)
    secret.chmod(0o600)
    cfg = tmp_path / "opsagent.toml"
    cfg.write_text(
        toml_text(
            {
                "host": {
                    "cache_dir": str(tmp_path / "cache"),
                    "state_dir": str(tmp_path / "state"),
                },
                "capabilities": {"allow": ["panda_task_operation"]},
                "credentials.panda_oidc_token": {"file": str(token)},
                "credentials.monitor_token": {"file": str(secret)},
                "capability.panda_task_operation": {
                    "monitor_url": monitor_url,
                    "panda_sys": sys.prefix,
                    "monitor_timeout": 2,
                },
                "capability.panda_task_operation.panda_env": panda.env(),
            }
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "opsagent.cli.main",
            "--config",
            str(cfg),
            "selftest",
            "--capability",
            "panda_task_operation",
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    doc = json.loads(done.stdout)
    assert MONITOR_TOKEN not in done.stdout + done.stderr
    return {
        (c["subject"], c["check"]): (c["status"], c["detail"])
        for c in doc["checks"]
        if c["subject"] == "panda_task_operation"
    }


def test_selftest_checks_the_budget_the_token_and_the_monitor_without_calling_panda(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    found = selftest(tmp_path, operator_token.path, monitor.url, panda)
    assert found[("panda_task_operation", "budget")] == ("ok", "120 s for PanDA within 150 s")
    status, detail = found[("panda_task_operation", "panda token")]
    assert status == "ok" and "PandaToken(" in detail and "expires=" in detail
    assert found[("panda_task_operation", "monitor")][0] == "ok"
    assert ("panda_task_operation", "panda (live)") not in found
    assert panda.server.requests == []


def test_selftest_live_asks_panda_with_the_token_and_names_what_fails(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    found = selftest(tmp_path, operator_token.path, monitor.url, panda, "--live")
    assert found[("panda_task_operation", "panda (live)")][0] == "ok"
    (probe,) = panda.lookup_requests
    assert probe.header("Authorization") == f"Bearer {operator_token.id_token}"

    stale = tmp_path / "stale" / ".token"
    stale.parent.mkdir()
    stale.write_bytes(token_file_bytes(exp_in=-60)[0])
    stale.chmod(0o600)
    found = selftest(tmp_path, stale, "http://127.0.0.1:9", panda, "--live")
    # The host's own credential check sees the expiry (the JWT's exp), and the
    # capability's check says so too.
    status, detail = found[("panda_task_operation", "credential panda_oidc_token")]
    assert status == "fail" and "renew it" in detail
    assert found[("panda_task_operation", "panda token")][0] == "fail"
    assert found[("panda_task_operation", "monitor")][0] == "fail"
    assert ("panda_task_operation", "panda (live)") not in found  # nothing to ask with
    panda.lookup_failure = None
    panda.id_tokens.clear()  # PanDA no longer accepts the operator's token
    found = selftest(tmp_path, operator_token.path, monitor.url, panda, "--live")
    status, detail = found[("panda_task_operation", "panda (live)")]
    assert status == "fail" and "refused or failed" in detail


def test_selftest_of_submit_evgen_task_checks_its_dispatcher_and_the_catalogue(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    proxy = tmp_path / "x509up"
    proxy.write_bytes(b"proxy")
    proxy.chmod(0o600)
    cfg = tmp_path / "evgen.toml"

    def run(dispatcher: str, *args: str) -> dict[tuple[str, str], tuple[str, str]]:
        cfg.write_text(
            toml_text(
                {
                    "host": {
                        "cache_dir": str(tmp_path / "cache"),
                        "state_dir": str(tmp_path / "state"),
                    },
                    "capabilities": {"allow": ["submit_evgen_task"]},
                    "credentials.panda_oidc_token": {"file": str(operator_token.path)},
                    "credentials.evgen_x509_proxy": {"file": str(proxy)},
                    "capability.submit_evgen_task": {
                        "monitor_url": monitor.url,
                        "panda_sys": sys.prefix,
                        "dispatcher": dispatcher,
                    },
                    "capability.submit_evgen_task.panda_env": panda.env(),
                }
            )
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "opsagent.cli.main",
                "--config",
                str(cfg),
                "selftest",
                "--capability",
                "submit_evgen_task",
                "--json",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
        doc = json.loads(done.stdout)
        return {
            (c["subject"], c["check"]): (c["status"], c["detail"])
            for c in doc["checks"]
            if c["subject"] == "submit_evgen_task"
        }

    found = run(str(tmp_path / "missing.py"))
    assert found[("submit_evgen_task", "dispatcher")][0] == "fail"
    assert found[("submit_evgen_task", "credential evgen_x509_proxy")][0] == "ok"
    assert found[("submit_evgen_task", "budget")][0] == "ok"
    assert found[("submit_evgen_task", "catalogue")][0] == "ok"  # it answers (400: no name)
    dispatcher = tmp_path / "evgen_job_dispatcher.py"
    dispatcher.write_text("print()\n")
    found = run(str(dispatcher), "--live")
    assert found[("submit_evgen_task", "dispatcher")] == ("ok", str(dispatcher))
    assert found[("submit_evgen_task", "panda (live)")][0] == "ok"
