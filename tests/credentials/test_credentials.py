"""Credentials by name: where they are found, which files are refused, when they expire."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opsagent.credentials import store as creds
from opsagent.credentials.store import CredentialSource

SECRET = "sentinel-8f3a1c-do-not-print"
JULY = datetime(2026, 7, 1, tzinfo=UTC).timestamp()


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def write(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def jwt(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def proxy_chain(proxy_until: datetime, user_until: datetime) -> bytes:
    """An x509 proxy file as voms-proxy-init writes it: proxy, its key, the user's cert."""
    user_key = ec.generate_private_key(ec.SECP256R1())
    proxy_key = ec.generate_private_key(ec.SECP256R1())
    user = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Operator")])
    proxy = x509.Name([*user, x509.NameAttribute(NameOID.COMMON_NAME, "123456")])
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def cert(subject, issuer, key, signer, until):  # noqa: ANN001, ANN202
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(until)
            .sign(signer, hashes.SHA256())
        )

    user_cert = cert(user, user, user_key, user_key, user_until)
    proxy_cert = cert(proxy, user, proxy_key, user_key, proxy_until)
    key_pem = proxy_key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())
    return (proxy_cert.public_bytes(serialization.Encoding.PEM) + key_pem
            + user_cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o644])
def test_files_only_the_owner_can_write_are_accepted(tmp_path, mode):
    path = write(tmp_path / "tok", SECRET, mode)
    cred = creds.resolve("tok", {"tok": CredentialSource(file=str(path))})
    assert cred.read() == SECRET and cred.path == path and cred.kind == "secret"


@pytest.mark.parametrize("mode, who", [(0o620, "its group"), (0o660, "its group"),
                                       (0o602, "others"), (0o666, "others")])
def test_group_or_world_writable_files_are_refused(tmp_path, mode, who):
    path = write(tmp_path / "tok", SECRET, mode)
    with pytest.raises(creds.CredentialRefused) as info:
        creds.resolve("tok", {"tok": CredentialSource(file=str(path))})
    message = str(info.value)
    assert f"has mode {mode:04o}, which lets {who} write it" in message
    assert f"chmod 0600 {path}" in message
    assert SECRET not in message


def test_a_file_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() == 0:
        path = write(tmp_path / "tok", SECRET)
        os.chown(path, 65534, 65534)
    else:
        path = Path("/etc/passwd")  # root's, 0644: readable, not ours
    with pytest.raises(creds.CredentialRefused) as info:
        creds.resolve("tok", {"tok": CredentialSource(file=str(path))})
    assert f"{path} is owned by" in str(info.value)
    assert "LoadCredential=tok:" in str(info.value)
    assert SECRET not in str(info.value)


def test_sources_file_env_and_the_systemd_credentials_directory(tmp_path, monkeypatch):
    sysd = tmp_path / "creds"
    sysd.mkdir()
    write(sysd / "from_systemd", "s1-value")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(sysd))
    monkeypatch.setenv("MY_TOKEN", "s2-value")
    sources = {"from_env": CredentialSource(env="MY_TOKEN")}
    by_systemd = creds.resolve("from_systemd", sources)
    assert by_systemd.path == sysd / "from_systemd"
    assert by_systemd.source == f"systemd credential {sysd / 'from_systemd'}"
    by_env = creds.resolve("from_env", sources)
    assert by_env.value == "s2-value" and by_env.path is None
    assert repr(by_env) == "Credential('from_env', value=<hidden>)"
    with pytest.raises(creds.CredentialMissing, match=r"\$CREDENTIALS_DIRECTORY|does not exist"):
        creds.resolve("absent", sources)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(creds.CredentialMissing, match="environment variable MY_TOKEN is not set"):
        creds.resolve("from_env", sources)
    with pytest.raises(creds.CredentialMissing, match=r"add \[credentials.absent\] file"):
        creds.resolve("absent", sources)


def test_x509_proxy_expiry_is_the_earliest_not_after_of_its_chain(tmp_path):
    path = write(tmp_path / "x509up", proxy_chain(at("2026-06-01 12:00"), at("2027-03-01 00:00")))
    sources = {"x509_proxy": CredentialSource(file=str(path))}
    cred = creds.locate("x509_proxy", sources)
    assert cred.kind == "x509"
    assert cred.expires_at == at("2026-06-01 12:00").timestamp()
    with pytest.raises(creds.CredentialExpired) as info:
        creds.resolve("x509_proxy", sources, now=JULY)
    assert str(info.value).startswith("x509_proxy expired 2026-06-01 12:00 UTC")
    assert str(path) in str(info.value)
    assert creds.resolve("x509_proxy", sources, now=JULY - 60 * 86400).path == path
    # A user certificate that ends first ends the proxy too.
    write(path, proxy_chain(at("2027-01-01 00:00"), at("2026-12-24 18:30")))
    assert creds.locate("x509_proxy", sources).expires_at == at("2026-12-24 18:30").timestamp()


def test_a_damaged_certificate_is_refused_without_quoting_it(tmp_path):
    good = proxy_chain(at("2027-01-01 00:00"), at("2027-01-01 00:00")).decode()
    lines = good.splitlines()
    lines[3] = SECRET + lines[3][len(SECRET):]
    path = write(tmp_path / "x509up", "\n".join(lines))
    with pytest.raises(creds.CredentialRefused) as info:
        creds.resolve("x509_proxy", {"x509_proxy": CredentialSource(file=str(path))})
    assert "cannot be parsed" in str(info.value)
    assert SECRET not in str(info.value)


def test_jwt_exp_raw_and_inside_panda_clients_token_file(tmp_path, monkeypatch):
    exp = at("2026-06-01 12:00").timestamp()
    raw = jwt({"sub": SECRET, "exp": int(exp)})
    write(tmp_path / "raw", raw + "\n")
    write(tmp_path / "panda", json.dumps({"id_token": raw, "refresh_token": SECRET * 2}))
    write(tmp_path / "no_exp", jwt({"sub": "x"}))
    write(tmp_path / "opaque", "not.a-jwt at all")
    monkeypatch.setenv("TOKEN_IN_ENV", raw)
    sources = {n: CredentialSource(file=str(tmp_path / n))
               for n in ("raw", "panda", "no_exp", "opaque")}
    sources["env"] = CredentialSource(env="TOKEN_IN_ENV")
    for name in ("raw", "panda", "env"):
        cred = creds.locate(name, sources)
        assert (cred.kind, cred.expires_at) == ("jwt", exp), name
        with pytest.raises(creds.CredentialExpired, match=f"^{name} expired 2026-06-01 12:00 UTC"):
            creds.resolve(name, sources, now=JULY)
    assert (creds.locate("no_exp", sources).kind, creds.locate("no_exp", sources).expires_at) == (
        "jwt", None)
    assert creds.locate("opaque", sources).kind == "secret"
    assert "expires 2026-06-01 12:00 UTC (in 30 d)" in creds.locate("raw", sources).describe(
        now=exp - 30 * 86400)


def test_a_capability_with_an_optional_credential(tmp_path):
    required = write(tmp_path / "required", "r-secret")
    unsafe = write(tmp_path / "unsafe", "u-secret", 0o666)
    sources = {"required": CredentialSource(file=str(required))}
    usable, problem, _ = creds.for_capability(("required", "extra"), ("extra",), sources)
    assert problem is None and set(usable) == {"required"}
    sources["extra"] = CredentialSource(file=str(unsafe))
    usable, problem, _ = creds.for_capability(("required", "extra"), ("extra",), sources)
    # Configured but unsafe: the operator meant it to be used.
    assert problem is not None and "has mode 0666" in problem
    usable, problem, _ = creds.for_capability(("required", "missing"), (), sources)
    assert problem is not None and "credential 'missing'" in problem


def test_availability_follows_expiry_and_renewal(tmp_path):
    path = write(tmp_path / "tok", jwt({"exp": int(JULY) + 10}))
    avail = creds.Availability({"cap": (("tok",), ())},
                               {"tok": CredentialSource(file=str(path))})
    assert avail.refresh(JULY) == {}
    held = avail.usable["cap"]
    assert set(held) == {"tok"} and avail.next_expiry(JULY) == JULY + 10
    changed = avail.refresh(JULY + 11)
    assert list(changed) == ["cap"] and changed["cap"].startswith("tok expired ")
    assert avail.unavailable["cap"] == changed["cap"] and held == {}
    write(path, jwt({"exp": int(JULY) + 86400}))
    assert avail.refresh(JULY + 12) == {"cap": None}
    assert "cap" not in avail.unavailable
    assert set(held) == {"tok"}, "the same mapping, updated in place"
    assert avail.expiries() == {"tok": JULY + 86400}


def test_secrets_of_reads_every_configured_source_best_effort(tmp_path, monkeypatch):
    write(tmp_path / "a", "file-secret", 0o666)  # refused as a credential, still a secret
    monkeypatch.setenv("B_SECRET", "env-secret")
    sources = {"a": CredentialSource(file=str(tmp_path / "a")),
               "b": CredentialSource(env="B_SECRET"),
               "c": CredentialSource(file=str(tmp_path / "missing"))}
    assert sorted(creds.secrets_of(sources)) == ["env-secret", "file-secret"]


def test_an_expired_credential_makes_its_capability_unavailable_at_once(opsagent_harness,
                                                                         tmp_path):
    import time

    import opscaps

    token = tmp_path / "ops_token"
    exp = int(time.time()) + 3
    write(token, jwt({"exp": exp}))
    h = opsagent_harness(modules=[opscaps], config={
        "host": {"credential_check_seconds": 2},
        "credentials.ops_token": {"file": str(token)}})
    assert h.send("ops_needs_token", {})["outcome"] == "ok"
    time.sleep(max(0.0, exp + 0.2 - time.time()))
    answer = h.send("ops_needs_token", {"seconds": 0})
    assert answer["msg_type"] == "request_rejected" and answer["code"] == "unavailable"
    assert answer["reason"].startswith(
        f"ops_needs_token is unavailable: ops_token expired {creds.utc(exp)} (token from file ")
    assert h.send("ops_work", {})["outcome"] == "ok", "other capabilities are untouched"
    write(token, jwt({"exp": exp + 3600}))  # renewed in place
    deadline = time.monotonic() + 5
    while "ops_needs_token" in h.host.unavailable and time.monotonic() < deadline:
        time.sleep(0.05)
    assert h.send("ops_needs_token", {})["outcome"] == "ok"


def test_an_optional_credential_that_appears_later_reaches_process_jobs(opsagent_harness,
                                                                         tmp_path):
    import time

    import opscaps

    extra = tmp_path / "ops_extra"
    h = opsagent_harness(modules=[opscaps], config={
        "host": {"credential_check_seconds": 0.2},
        "credentials.ops_extra": {"file": str(extra)}})
    first = h.send("ops_optional", {})
    assert first["outcome"] == "ok" and first["handed"] == []
    assert first["pid"] != os.getpid(), "a process job"
    write(extra, "extra-secret")
    deadline = time.monotonic() + 5
    while "ops_extra" not in h.host.availability.usable["ops_optional"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert h.send("ops_optional", {})["handed"] == ["OPSAGENT_CREDENTIAL_OPS_EXTRA"]
