"""The PanDA operations with a token the host renews, against a real issuer (Keycloak).

The fake PanDA server checks each bearer token as the real one does: its signature with
the issuer's published keys, its issuer, its audience and its expiry
(:class:`opsagent.testing.oidc.TokenVerifier`). The capability is unchanged: it reads its
credential's file when a job starts, and the host renews that file in place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from opsagent.testing import FakeMonitor, FakePanda, TokenVerifier
from panda_ops_support import MARK, MONITOR_TOKEN, TASK, wait_until

pytestmark = pytest.mark.broker

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from support import Caller, HostProcess, service_env  # noqa: E402


@pytest.fixture
def activemq(broker: dict[str, str]) -> dict[str, str]:
    return broker


@pytest.fixture
def kc() -> dict[str, str]:
    return service_env("keycloak")


def login(kc: dict[str, str]) -> bytes:
    r = requests.post(
        kc["KEYCLOAK_ISSUER"] + "/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": kc["KEYCLOAK_LONG_CLIENT_ID"],
              "username": kc["KEYCLOAK_OPERATOR"], "password": kc["KEYCLOAK_OPERATOR_PASSWORD"],
              "scope": "openid profile email"},
        timeout=10,
    )
    r.raise_for_status()
    return r.content


def id_token(path: Path) -> str:
    return str(json.loads(path.read_bytes())["id_token"])


def pause(caller: Caller, op: str, task_id: int) -> dict[str, Any]:
    rid = caller.send("panda_task_operation", {
        "operation": "pause", "task_name": TASK, "jedi_task_id": task_id,
        "operation_id": op, "created_by": "alice"})
    return caller.wait_event(rid, timeout=60)


def test_operations_before_and_after_a_renewal_each_use_the_token_the_issuer_signed(
    activemq: dict[str, str], kc: dict[str, str], tmp_path: Path, monitor: FakeMonitor
) -> None:
    d = tmp_path / "pathena"
    d.mkdir(mode=0o700)
    token = d / ".token"
    token.write_bytes(login(kc))
    token.chmod(0o600)
    first = id_token(token)
    secret = tmp_path / "monitor_token"
    secret.write_text(MONITOR_TOKEN + "\n")
    secret.chmod(0o600)
    verifier = TokenVerifier(kc["KEYCLOAK_ISSUER"], audience=kc["KEYCLOAK_LONG_CLIENT_ID"])
    with FakePanda(verifier=verifier) as panda:
        panda.add_task(41000, "t.41000")
        panda.add_task(41001, "t.41001")
        cfg = {"monitor_url": monitor.url, "panda_sys": sys.prefix, "monitor_timeout": 2.0,
               "verify_seconds": 2.0, "verify_every": 0.2}
        host = HostProcess(tmp_path / "run", activemq, paths=(), extra={
            "capabilities": {"allow": ["panda_task_operation"]},
            "credentials.panda_oidc_token": {"file": str(token)},
            "credentials.monitor_token": {"file": str(secret)},
            # Renewed once it is 3 s old: the second operation runs after a renewal.
            "renewal.panda_oidc_token": {"grant": "refresh_token",
                                         "client_id": kc["KEYCLOAK_LONG_CLIENT_ID"],
                                         "issuer": kc["KEYCLOAK_ISSUER"],
                                         "before_seconds": 10_000, "min_age_seconds": 3},
            "capability.panda_task_operation": cfg,
            "capability.panda_task_operation.panda_env": {**panda.env(), MARK: panda.url},
        }).start()
        caller = Caller(activemq, host.queue, host.topic)
        try:
            before = pause(caller, "op-before", 41000)
            host.wait_log("credential panda_oidc_token renewed (refresh_token)", timeout=30)
            wait_until("the renewed token", lambda: id_token(token) != first, timeout=10)
            renewed = id_token(token)
            after = pause(caller, "op-after", 41001)
        finally:
            caller.close()
            host.stop()
        seen = list(panda.accepted_tokens)
    assert before["status"] == "verified", before
    assert after["status"] == "verified", after
    # PanDA saw the operator's first token, then the renewed one; both verified with the
    # issuer's keys (an unsigned or expired one is refused: test_renewal.py's verifier test).
    assert seen[0] == first and seen[-1] == renewed and renewed != first
    assert set(seen) <= {first, renewed}
    assert json.loads(token.read_bytes())["refresh_token"] not in host.text()
