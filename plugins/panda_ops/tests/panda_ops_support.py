"""Helpers of the panda_ops tests: the operator's token, configuration, jobs."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import opsagent_panda_ops
from opsagent import Credential, Job, testing
from opsagent.testing import FakeMonitor, FakePanda

OPERATION = testing.declared(opsagent_panda_ops)["panda_task_operation"]
BATCH = testing.declared(opsagent_panda_ops)["panda_task_operations"]
MONITOR_TOKEN = "monitor-token-0123456789"  # noqa: S105 - a test value
TASK = "group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1"
#: A variable every program the capability starts carries (through ``panda_env``).
MARK = "PANDA_OPS_TEST_MARK"


def b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def token_file_bytes(exp_in: float = 86400.0) -> tuple[bytes, str]:
    """A panda-client ``.token`` file and its id token."""
    claims = {
        "name": "Ops Operator",
        "preferred_username": "opsop",
        "groups": ["EIC", "EIC/production"],
        "exp": int(time.time() + exp_in),
        "sub": "0000-1111",
    }
    id_token = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"
    doc = {"id_token": id_token, "refresh_token": "refresh-token-secret-0123456789"}
    return json.dumps(doc).encode(), id_token


def table(monitor: FakeMonitor, panda: FakePanda, **overrides: Any) -> dict[str, Any]:
    """``[capability.panda_task_operation(s)]`` for the fakes, with short waits."""
    return {
        "monitor_url": monitor.url,
        "panda_sys": sys.prefix,
        "panda_env": {**panda.env(), MARK: panda.url},
        "monitor_timeout": 2.0,
        "verify_seconds": 2.0,
        "verify_every": 0.2,
        "backstop": 5.0,
        "kill_grace": 0.5,
        **overrides,
    }


def make_job(
    cap: Any,
    tmp_path: Path,
    token: Path | None,
    config: dict[str, Any],
    *,
    time_limit: float = 40.0,
    notes: Any = None,
    job_id: str = "job-1",
) -> Job:
    creds = {"monitor_token": Credential("monitor_token", value=MONITOR_TOKEN)}
    if token is not None:
        creds["panda_oidc_token"] = Credential("panda_oidc_token", path=token)
    (tmp_path / "cache").mkdir(exist_ok=True)
    return testing.make_job(
        cap,
        cache_dir=tmp_path / "cache",
        config=config,
        credentials=creds,
        time_limit=time_limit,
        notes=notes,
        job_id=job_id,
    )


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
