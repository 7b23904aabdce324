"""Token renewal against a real OIDC provider (Keycloak, started by scripts/services.sh).

The realm's tokens live 120 s and its refresh tokens rotate (one use each), so a renewal
that reuses a refresh token another host already used is refused -- the lost update
these tests look for.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
from opsagent.credentials.renewal import RenewalConfig, Renewer, TokenFile
from opsagent.credentials.store import CredentialSource
from opsagent.reporting.health import Snapshot
from support import service_env


@pytest.fixture(scope="module")
def kc() -> dict[str, str]:
    env = service_env("keycloak")
    try:
        requests.get(env["KEYCLOAK_ISSUER"] + "/.well-known/openid-configuration", timeout=5)
    except requests.RequestException as exc:
        pytest.fail(f"Keycloak is not answering ({exc}): `scripts/services.sh start keycloak`")
    return env


def login(kc: dict[str, str]) -> bytes:
    """The operator's token file as panda-client writes it: the token endpoint's answer."""
    r = requests.post(
        kc["KEYCLOAK_ISSUER"] + "/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": kc["KEYCLOAK_CLIENT_ID"],
              "username": kc["KEYCLOAK_OPERATOR"], "password": kc["KEYCLOAK_OPERATOR_PASSWORD"],
              "scope": "openid profile email"},
        timeout=10,
    )
    r.raise_for_status()
    return r.content


def admin_token(kc: dict[str, str]) -> str:
    r = requests.post(
        kc["KEYCLOAK_URL"] + "/realms/master/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "admin-cli",
              "username": kc["KEYCLOAK_ADMIN"], "password": kc["KEYCLOAK_ADMIN_PASSWORD"]},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()["access_token"]


def logout_operator(kc: dict[str, str]) -> None:
    """Revoke every session (and so every refresh token) of the operator."""
    headers = {"Authorization": f"Bearer {admin_token(kc)}"}
    base = kc["KEYCLOAK_URL"] + "/admin/realms/opsagent/users"
    users = requests.get(base, params={"username": kc["KEYCLOAK_OPERATOR"], "exact": "true"},
                         headers=headers, timeout=10).json()
    r = requests.post(f"{base}/{users[0]['id']}/logout", headers=headers, timeout=10)
    assert r.status_code == 204, r.text


def token_file(tmp_path: Path, raw: bytes, mode: int = 0o600) -> Path:
    d = tmp_path / "pathena"
    d.mkdir(mode=0o700)
    path = d / ".token"
    path.write_bytes(raw)
    path.chmod(mode)
    return path


def renewer(kc, path: Path, *, issuer: str | None = None, clock=time.time, **kw) -> Renewer:
    cfg = RenewalConfig(grant=kw.pop("grant", "refresh_token"),
                        client_id=kw.pop("client_id", kc["KEYCLOAK_CLIENT_ID"]),
                        issuer=issuer or kc["KEYCLOAK_ISSUER"], retry_seconds=1.0, **kw)
    sources = {"panda_token": CredentialSource(file=str(path))}
    if cfg.client_secret_credential:
        secret = path.parent / "robot.secret"
        secret.write_text(kc["KEYCLOAK_ROBOT_SECRET"])
        secret.chmod(0o600)
        sources[cfg.client_secret_credential] = CredentialSource(file=str(secret))
    return Renewer("panda_token", cfg, sources, clock=clock)


def wait_until_due(r: Renewer, path: Path) -> None:
    due = r.due_at(TokenFile.parse(path.read_bytes()))
    time.sleep(max(0.0, due - time.time()) + 0.2)


def test_a_token_is_renewed_before_it_expires_and_written_back_in_place(kc, tmp_path):
    path = token_file(tmp_path, login(kc), mode=0o640)
    old = TokenFile.parse(path.read_bytes())
    old_inode = path.stat().st_ino
    r = renewer(kc, path)
    assert r.renew_if_due() is False, "a fresh token is not renewed"
    assert path.read_bytes() and path.stat().st_ino == old_inode
    # 120 s tokens: due once a tenth of their life has passed, long before they expire.
    wait_until_due(r, path)
    assert r.renew_if_due() is True
    new = TokenFile.parse(path.read_bytes())
    assert new.data["id_token"] != old.data["id_token"]
    assert new.expires_at > old.expires_at
    assert time.time() < old.expires_at, "renewed while the old token was still valid"
    # Atomic: a new file renamed over the old one, with the old one's mode.
    assert path.stat().st_ino != old_inode
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == [".token"]
    assert r.state.renewals == 1 and r.state.last_error is None
    # What panda-client reads: a JSON object with an id_token and a refresh_token.
    assert {"id_token", "refresh_token"} <= set(json.loads(path.read_bytes()))


def test_a_revoked_refresh_token_is_reported_and_the_file_left_alone(kc, tmp_path):
    path = token_file(tmp_path, login(kc))
    before = path.read_bytes()
    logout_operator(kc)
    r = renewer(kc, path, before_seconds=10_000)  # due at once
    wait_until_due(r, path)
    assert r.renew_if_due() is False
    assert path.read_bytes() == before
    assert r.state.consecutive_failures == 1
    assert "invalid_grant" in r.state.last_error
    assert "log in again" in r.state.last_error
    assert before.decode() not in r.state.last_error
    # Retried with a doubling delay, not in a loop.
    assert 0.5 < r.state.next_at - time.time() <= 1.0
    assert r.renew_if_due() is False
    assert r.state.consecutive_failures == 2
    assert 1.5 < r.state.next_at - time.time() <= 2.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_issuer_is_reported_in_the_status_line_and_nothing_is_written(
    kc, tmp_path
):
    path = token_file(tmp_path, login(kc))
    before = path.read_bytes()
    r = renewer(kc, path, issuer=f"http://127.0.0.1:{_closed_port()}/realms/opsagent",
                before_seconds=10_000)
    wait_until_due(r, path)
    assert r.renew_if_due() is False
    assert path.read_bytes() == before
    assert "discovery" in r.state.last_error and "ConnectionError" in r.state.last_error
    snap = Snapshot(state="READY", broker_connected=True, capabilities=("submit_task",),
                    unavailable={}, broken=(), in_flight={}, queued={},
                    renewal={"panda_token": r.state.to_json()})
    assert not snap.healthy
    assert "RENEWAL FAILING: panda_token (the issuer's discovery" in snap.line()


@pytest.mark.parametrize("skew", [+600.0, -600.0])
def test_a_host_clock_ahead_or_behind_the_issuer_renews_once_not_in_a_loop(kc, tmp_path, skew):
    path = token_file(tmp_path, login(kc))
    r = renewer(kc, path, clock=lambda: time.time() + skew)
    first = r.renew_if_due()
    # Ahead: the token looks 10 minutes old, so it is renewed at once; behind, it is not.
    assert first is (skew > 0)
    if not first:
        # Due a tenth of a lifetime after issue, on the host's (late) clock.
        due = r.due_at(TokenFile.parse(path.read_bytes()))
        assert due - r.clock() == pytest.approx(12, abs=5)
        time.sleep(max(0.0, due - r.clock()) + 0.2)
        assert r.renew_if_due() is True
    # Now the skew is measured from a token this host received: the next renewal is due
    # ~a tenth of a lifetime later on the host's clock, not at once.
    token = TokenFile.parse(path.read_bytes())
    assert r.skew == pytest.approx(skew, abs=5)
    assert r.due_at(token) - r.clock() == pytest.approx(token.lifetime * 0.1, abs=5)
    assert r.renew_if_due() is False
    assert r.state.renewals == 1


SHARED = textwrap.dedent("""
    import json, sys, time
    from opsagent.credentials.renewal import RenewalConfig, Renewer
    from opsagent.credentials.store import CredentialSource
    path, issuer, client, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    r = Renewer("panda_token", RenewalConfig(grant="refresh_token", client_id=client,
                issuer=issuer, before_seconds=10_000),
                {"panda_token": CredentialSource(file=path)})
    r.token_endpoint(__import__("requests").Session())   # discovery before the race
    time.sleep(max(0.0, start - time.time()))
    renewed = r.renew_if_due()
    print(json.dumps({"renewed": renewed, "error": r.state.last_error}))
""")


def test_two_hosts_sharing_one_token_file_renew_it_once_and_lose_nothing(kc, tmp_path):
    path = token_file(tmp_path, login(kc))
    token = TokenFile.parse(path.read_bytes())
    # Both renewers race from the same moment, once the token is due (a tenth of its life).
    start = max(time.time() + 3.0, token.issued_at + token.lifetime * 0.1 + 0.5)
    procs = [
        subprocess.Popen([sys.executable, "-c", SHARED, str(path), kc["KEYCLOAK_ISSUER"],
                          kc["KEYCLOAK_CLIENT_ID"], str(start)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sorted(r["renewed"] for r in results) == [False, True]
    assert [r["error"] for r in results] == [None, None]
    # The refresh token in the file is the newest one: the next renewal works (a lost
    # update would leave a refresh token the issuer has already rotated away).
    r = renewer(kc, path, before_seconds=10_000)
    wait_until_due(r, path)
    assert r.renew_if_due() is True, r.state.last_error


def test_a_robot_gets_its_token_with_the_client_credentials_grant(kc, tmp_path):
    d = tmp_path / "robot"
    d.mkdir(mode=0o700)
    path = d / ".token"
    r = renewer(kc, path, grant="client_credentials", client_id=kc["KEYCLOAK_ROBOT_ID"],
                client_secret_credential="robot_secret")
    assert r.renew_if_due() is True, r.state.last_error
    token = TokenFile.parse(path.read_bytes())
    assert path.stat().st_mode & 0o777 == 0o600
    assert token.expires_at > time.time() + 60
    assert r.renew_if_due() is False
    assert kc["KEYCLOAK_ROBOT_SECRET"] not in path.read_text()


def test_a_wrong_robot_secret_is_refused_by_the_issuer_and_reported(kc, tmp_path):
    d = tmp_path / "robot"
    d.mkdir(mode=0o700)
    path = d / ".token"
    r = renewer(kc, path, grant="client_credentials", client_id=kc["KEYCLOAK_ROBOT_ID"],
                client_secret_credential="robot_secret")
    (d / "robot.secret").write_text("not-the-secret")
    assert r.renew_if_due() is False
    assert "401" in r.state.last_error or "unauthorized_client" in r.state.last_error
    assert "not-the-secret" not in r.state.last_error
    assert not path.exists()


def test_a_token_directory_others_can_write_is_refused(kc, tmp_path):
    path = token_file(tmp_path, login(kc))
    os.chmod(path.parent, 0o770)
    r = renewer(kc, path, before_seconds=10_000)
    assert r.renew_if_due() is False
    assert "writable by others" in r.state.last_error


def test_selftest_says_whether_each_renewal_can_work(kc, tmp_path):
    from support import OPSAGENT, toml

    path = token_file(tmp_path, login(kc))
    no_refresh = tmp_path / "other"
    no_refresh.mkdir(mode=0o700)
    (no_refresh / ".token").write_text(json.dumps(
        {"id_token": json.loads(path.read_bytes())["id_token"]}))
    (no_refresh / ".token").chmod(0o600)
    cfg = tmp_path / "opsagent.toml"
    cfg.write_text(toml({
        "host": {"cache_dir": str(tmp_path / "cache"), "state_dir": str(tmp_path / "state")},
        "credentials.good": {"file": str(path)},
        "credentials.bare": {"file": str(no_refresh / ".token")},
        "renewal.good": {"grant": "refresh_token", "client_id": kc["KEYCLOAK_CLIENT_ID"],
                         "issuer": kc["KEYCLOAK_ISSUER"]},
        "renewal.bare": {"grant": "refresh_token", "client_id": kc["KEYCLOAK_CLIENT_ID"],
                         "issuer": f"http://127.0.0.1:{_closed_port()}/realms/x"},
    }))
    done = subprocess.run([*OPSAGENT, "--config", str(cfg), "selftest", "--live", "--json"],
                          capture_output=True, text=True, timeout=120)
    checks = {(c["subject"], c["check"]): (c["status"], c["detail"])
              for c in json.loads(done.stdout)["checks"]}
    assert checks[("renewal good", "directory")][0] == "ok"
    status, detail = checks[("renewal good", "token")]
    assert status == "ok" and "renewed by refresh_token in" in detail, detail
    assert checks[("renewal good", "issuer")] == (
        "ok", f"token endpoint {kc['KEYCLOAK_ISSUER']}/protocol/openid-connect/token")
    assert checks[("renewal bare", "token")][0] == "fail"
    assert "no refresh_token" in checks[("renewal bare", "token")][1]
    assert checks[("renewal bare", "issuer")][0] == "fail"
    assert done.returncode == 1


def test_the_fake_panda_servers_verifier_accepts_the_issuers_tokens_and_no_others(kc, tmp_path):
    from opsagent.testing.oidc import TokenRejected, TokenVerifier

    verifier = TokenVerifier(kc["KEYCLOAK_ISSUER"], audience=kc["KEYCLOAK_CLIENT_ID"])
    good = json.loads(login(kc))["id_token"]
    assert verifier.verify(good)["preferred_username"] == kc["KEYCLOAK_OPERATOR"]
    head, body, sig = good.split(".")
    forged = ".".join([head, body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB"), sig])
    with pytest.raises(TokenRejected, match="invalid token"):
        verifier.verify(forged)
    # Expired: a verifier whose clock is five minutes ahead (a negative leeway).
    late = TokenVerifier(kc["KEYCLOAK_ISSUER"], audience=kc["KEYCLOAK_CLIENT_ID"],
                         leeway=-300)
    with pytest.raises(TokenRejected, match="expired"):
        late.verify(good)
