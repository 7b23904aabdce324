"""The x509 proxy is checked before any work starts."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fpl_support import expired_proxy
from opsagent_fetch_payload_log import proxy


def openssl_enddate(path: Path) -> datetime:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-enddate"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return datetime.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT").replace(
        tzinfo=UTC
    )


def test_a_valid_proxy_reports_the_notafter_openssl_reads(proxy_file: Path) -> None:
    assert proxy.check(proxy_file) == openssl_enddate(proxy_file)


def test_an_expired_proxy_is_refused_with_its_expiry_and_the_remedy(tmp_path: Path) -> None:
    path = expired_proxy(tmp_path)
    ends = openssl_enddate(path)
    with pytest.raises(
        proxy.ProxyUnusable,
        match=f"expired at {ends:%Y-%m-%dT%H:%M:%SZ}; renew it with voms-proxy-init",
    ):
        proxy.check(path)


def test_the_earliest_certificate_of_the_chain_decides(proxy_file: Path, tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    chain.write_bytes(proxy_file.read_bytes() + expired_proxy(tmp_path).read_bytes())
    chain.chmod(0o600)
    with pytest.raises(proxy.ProxyUnusable, match="expired at"):
        proxy.check(chain)


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_proxy_others_can_write_is_refused(proxy_file: Path, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "x509up"
    path.write_bytes(proxy_file.read_bytes())
    path.chmod(mode)
    with pytest.raises(
        proxy.ProxyUnusable, match=f"writable by group or others \\(mode 0{mode:o}\\)"
    ):
        proxy.check(path)


def test_a_missing_proxy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(proxy.ProxyUnusable, match="does not exist; create it with voms-proxy-init"):
        proxy.check(tmp_path / "nope")


def test_a_directory_is_not_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(proxy.ProxyUnusable, match="is not a regular file"):
        proxy.check(tmp_path)


def test_a_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x509up"
    path.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(proxy.ProxyUnusable, match="not a PEM certificate file: no certificate"):
        proxy.check(path)
