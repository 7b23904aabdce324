"""Credentials renewed in place reach the next job without a restart, and a job already
running keeps the copy it started with (docs/operations.md, "Credentials renewed in place").

The x509 proxy is found the old agent's way, through ``X509_USER_PROXY`` naming the live
file; the host runs real job processes (``process`` isolation)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import opscaps
import pytest
from opsagent.testing.certs import self_signed


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_text().strip().encode()).hexdigest()


def renew(live: Path, tmp: Path, subject: str, *, atomic: bool) -> str:
    """A new proxy at ``live``: as cron re-makes it (a new file renamed over the old one,
    or rewritten in place)."""
    made = self_signed(tmp / subject, subject).combined()
    if atomic:
        os.replace(made, live)
    else:
        live.write_bytes(made.read_bytes())
    return digest(live)


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_proxy_renewed_while_the_host_runs_reaches_the_next_job_not_the_running_one(
    opsagent_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    live = tmp_path / "wenauseic" / "longproxy-for-rucio"
    live.parent.mkdir()
    self_signed(tmp_path / "one", "proxy one").combined(live)
    one = digest(live)
    monkeypatch.setenv("X509_USER_PROXY", str(live))
    h = opsagent_harness(modules=[opscaps])
    gate = tmp_path / "gate"
    running = h.publish("ops_renewed", {"hold": str(gate)})
    wait_for(Path(f"{gate}.started"))

    two = renew(live, tmp_path, "proxy two", atomic=True)
    after = h.send("ops_renewed", {})
    assert after["outcome"] == "ok", after
    assert after["first"] == two, "the job after a renewal uses the renewed proxy"
    assert after["origin"] == str(live) and after["path"] != str(live)

    three = renew(live, tmp_path, "proxy three", atomic=False)
    assert h.send("ops_renewed", {})["first"] == three

    gate.touch()
    held = h.wait_for(running)
    assert held["outcome"] == "ok", held
    # The job that was running read its own copy, before and after both renewals.
    assert held["first"] == held["again"] == one
    assert not Path(held["path"]).exists(), "the job's copy goes with the job"
    assert "ops_renewed" not in h.host.unavailable


def test_a_token_the_host_renews_is_written_back_where_the_old_agent_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$PANDA_CONFIG_ROOT/.token`` with no [credentials] table: the renewal (docs/renewal.md)
    rewrites that file, which the next job copies."""
    from opsagent.credentials.renewal import RenewalConfig, Renewer

    monkeypatch.setenv("PANDA_CONFIG_ROOT", str(tmp_path / ".pathena"))
    cfg = RenewalConfig(
        grant="refresh_token", client_id="panda-client", issuer="https://issuer.example/realm"
    )
    renewer = Renewer("panda_oidc_token", cfg, {})
    assert renewer.path == tmp_path / ".pathena" / ".token"
    monkeypatch.delenv("PANDA_CONFIG_ROOT")
    with pytest.raises(ValueError, match="must be a file the host may rewrite"):
        Renewer("panda_oidc_token", cfg, {})
