"""opsagent.testing.certs: self-signed certificates a real TLS stack and x509 readers accept."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from opsagent.testing import self_signed


def test_a_proxy_stand_in_is_certificate_then_key_in_one_private_file(tmp_path: Path) -> None:
    made = self_signed(tmp_path, "opsagent test proxy")
    proxy = made.combined()
    assert proxy == tmp_path / "opsagent_test_proxy.pem"
    assert stat.S_IMODE(proxy.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.key.stat().st_mode) == 0o600
    text = proxy.read_text()
    assert text.index("BEGIN CERTIFICATE") < text.index("PRIVATE KEY")
    cert = x509.load_pem_x509_certificate(proxy.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=opsagent test proxy"
    assert cert.not_valid_after_utc == made.not_after
    # Valid now, for about the days asked.
    assert cert.not_valid_before_utc.timestamp() < time.time()
    assert 2 * 86400 - 60 < made.not_after.timestamp() - time.time() <= 2 * 86400


def test_negative_days_make_one_that_has_expired(tmp_path: Path) -> None:
    made = self_signed(tmp_path, "expired", days=-1)
    cert = x509.load_pem_x509_certificate(made.cert.read_bytes())
    assert cert.not_valid_before_utc < cert.not_valid_after_utc < datetime.now(UTC)
    # openssl, as an operator would check it, agrees.
    checked = subprocess.run(
        ["openssl", "x509", "-in", str(made.cert), "-noout", "-checkend", "0"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 1, checked.stdout


def test_a_server_certificate_for_an_address_passes_hostname_verification(
    tmp_path: Path,
) -> None:
    server = self_signed(tmp_path, "127.0.0.1", ip="127.0.0.1")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(server.cert, server.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        with served.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(server.cert))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(5) == b"hello"
    thread.join(5)
    listener.close()


def test_a_client_does_not_trust_a_certificate_it_was_not_given(tmp_path: Path) -> None:
    server = self_signed(tmp_path / "server", "127.0.0.1", ip="127.0.0.1")
    someone_else = self_signed(tmp_path / "other", "someone else")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(server.cert, server.key)
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            served.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(someone_else.cert))
    with socket.create_connection(listener.getsockname(), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(5)
    listener.close()
