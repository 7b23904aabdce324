"""check_credential: a job checks a credential again the host's way (mode, owner, expiry)."""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
from pathlib import Path

import pytest
from opsagent import Credential, CredentialError, check_credential
from opsagent.testing import self_signed

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def certificate(not_after: dt.datetime) -> bytes:
    """A self-signed certificate and its key, PEM, ending at ``not_after``."""
    with tempfile.TemporaryDirectory() as tmp:
        cert = self_signed(Path(tmp), "opsagent test proxy", not_after=not_after)
        return cert.combined().read_bytes()


def proxy(tmp_path: Path, *certs: bytes, name: str = "x509up", mode: int = 0o600) -> Credential:
    path = tmp_path / name
    path.write_bytes(b"".join(certs))
    path.chmod(mode)
    return Credential("x509_proxy", path=path)


def openssl_enddate(path: Path) -> float:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-enddate"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    ends = dt.datetime.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
    return ends.replace(tzinfo=dt.UTC).timestamp()


def test_a_valid_proxy_gets_the_notafter_openssl_reads(tmp_path: Path) -> None:
    cred = proxy(tmp_path, certificate(NOW + dt.timedelta(days=2)))
    checked = check_credential(cred, kind="x509")
    assert checked.kind == "x509"
    assert checked.expires_at == openssl_enddate(cred.path)  # type: ignore[arg-type]
    assert checked.path == cred.path and checked.mode is not None


def test_the_earliest_certificate_of_the_chain_decides(tmp_path: Path) -> None:
    soon, later = NOW + dt.timedelta(hours=3), NOW + dt.timedelta(days=9)
    cred = proxy(tmp_path, certificate(later), certificate(soon))
    assert check_credential(cred).expires_at == soon.timestamp()


def test_an_expired_proxy_is_refused_with_its_expiry(tmp_path: Path) -> None:
    ended = NOW - dt.timedelta(hours=1)
    cred = proxy(tmp_path, certificate(ended))
    with pytest.raises(CredentialError, match=r"x509_proxy expired .* renew it") as info:
        check_credential(cred)
    assert info.value.credential.expires_at == ended.timestamp()  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_file_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    cred = proxy(tmp_path, certificate(NOW + dt.timedelta(days=2)), mode=mode)
    with pytest.raises(CredentialError, match=f"has mode 0{mode:o}.*chmod 0600"):
        check_credential(cred)


def test_a_missing_file_and_a_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="does not exist"):
        check_credential(Credential("x509_proxy", path=tmp_path / "nope"))
    with pytest.raises(CredentialError, match="is not a regular file"):
        check_credential(Credential("x509_proxy", path=tmp_path))


def test_a_proxy_without_a_certificate_is_refused_when_x509_is_asked_for(tmp_path: Path) -> None:
    cred = proxy(tmp_path, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert check_credential(cred).kind == "secret"
    with pytest.raises(CredentialError, match="holds no x509 certificate"):
        check_credential(cred, kind="x509")


def test_a_value_is_checked_for_expiry_too() -> None:
    assert check_credential(Credential("pcs_token", value="s3cret")).kind == "secret"
