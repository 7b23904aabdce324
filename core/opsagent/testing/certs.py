"""Self-signed certificates for tests, made in-process with ``cryptography`` (no ``openssl``).

One call makes what tests of credentialed capabilities keep needing: a stand-in x509
proxy (:meth:`Certificate.combined`, the certificate and its key in one file of mode
0600, what ``X509_USER_PROXY`` names), one that has already expired (``days=-1``), a
certificate a loopback TLS fake can serve (``ip="127.0.0.1"`` puts the address in its
subjectAltName, so a client that verifies the host name accepts it), or one that nobody
trusts::

    proxy = self_signed(tmp_path, "opsagent test proxy").combined()
    server = self_signed(tmp_path, "127.0.0.1", ip="127.0.0.1")
    ctx.load_cert_chain(server.cert, server.key)
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@attrs.frozen
class Certificate:
    """A certificate and its private key, each a PEM file."""

    cert: Path
    key: Path
    not_after: datetime

    def combined(self, path: Path | None = None) -> Path:
        """The certificate, then its key, in one PEM file of mode 0600 (as an x509 proxy
        is kept); by default beside the certificate, named ``<stem>.pem``."""
        path = path or self.cert.with_suffix(".pem")
        path.write_bytes(self.cert.read_bytes() + self.key.read_bytes())
        path.chmod(0o600)
        return path


def self_signed(
    directory: Path,
    subject: str,
    *,
    days: float = 2,
    ip: str | None = None,
    not_after: datetime | None = None,
) -> Certificate:
    """A certificate for ``CN=<subject>`` signed by its own key, written into ``directory``
    as ``<subject>.crt`` and ``<subject>.key`` (mode 0600).

    It is valid from a day ago until ``days`` from now: a negative ``days`` makes one that
    has expired.  ``not_after`` sets the end exactly instead (a test comparing expiries to
    the second).  ``ip`` adds that address to the subjectAltName.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", subject)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC).replace(microsecond=0)
    not_after = not_after or now + timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, not_after) - timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ip is not None:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Certificate(cert_path, key_path, not_after)
