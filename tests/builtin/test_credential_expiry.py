"""``credential_expiry_check``: the host's own credential check as a capability (the first
step of catalog_sync), in the old doer's JSON shape, with selftest's expiry rules."""

from __future__ import annotations

import shutil

import pytest
from opsagent.testing import self_signed


def configured(tmp_path, **certs_days) -> dict:
    out = {}
    for name, days in certs_days.items():
        cert = self_signed(tmp_path / "made", name, days=days)
        dest = tmp_path / "creds" / name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(cert.cert, dest)
        dest.chmod(0o600)
        out[f"credentials.{name}"] = {"file": str(dest)}
    return out


def by_name(event: dict) -> dict:
    return {c["credential"]: c for c in event["credentials"]}


def test_a_credential_expiring_soon_is_a_warning_and_the_old_shape_is_kept(
        opsagent_harness, tmp_path):
    secret = tmp_path / "creds" / "monitor_token"
    config = configured(tmp_path, far_proxy=30, soon_proxy=0.5)
    secret.write_text("s3cret-value")
    secret.chmod(0o600)
    config["credentials.monitor_token"] = {"file": str(secret)}
    h = opsagent_harness(config=config)
    event = h.send("credential_expiry_check", {"created_by": "catalog_sync"})
    assert event["msg_type"] == "credential_expiry_checked"
    assert (event["ok"], event["outcome"]) == (True, "warning")
    assert event["reason"] == "soon_proxy expires in 0.5 day(s)"
    found = by_name(event)
    assert list(found) == ["far_proxy", "monitor_token", "soon_proxy"]
    assert {k: found["far_proxy"][k] for k in ("status", "days_left")} == {
        "status": "ok", "days_left": pytest.approx(30, abs=0.01)}
    assert found["monitor_token"]["status"] == "ok"
    assert found["monitor_token"]["days_left"] is None
    assert found["soon_proxy"]["status"] == "warning"
    assert "s3cret" not in str(event)
    # A wider warning window makes the far one a warning too.
    wide = h.send("credential_expiry_check", {"warning_days": 60})
    assert by_name(wide)["far_proxy"]["status"] == "warning"


def test_an_expired_or_missing_credential_is_an_error(opsagent_harness, tmp_path):
    config = configured(tmp_path, old_proxy=-1, far_proxy=30)
    config["credentials.gone"] = {"file": str(tmp_path / "creds" / "gone")}
    h = opsagent_harness(config=config)
    event = h.send("credential_expiry_check")
    assert event["msg_type"] == "credential_expiry_check_failed"
    assert (event["ok"], event["outcome"]) == (False, "error")
    assert event["error"] == "gone: missing; old_proxy: expired"
    found = by_name(event)
    assert found["old_proxy"]["days_left"] < 0 and "renew it" in found["old_proxy"]["detail"]
    assert found["gone"]["detail"].endswith("does not exist")
    assert found["far_proxy"]["status"] == "ok"


def test_it_refuses_a_warning_window_out_of_range(opsagent_harness):
    h = opsagent_harness()
    rejected = h.send("credential_expiry_check", {"warning_days": 1000})
    assert rejected["code"] == "invalid" and "$.warning_days" in rejected["reason"]
