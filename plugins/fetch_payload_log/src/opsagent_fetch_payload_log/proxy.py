"""Whether the x509 proxy can be used, decided before any work starts.

A proxy file holds PEM certificates (the proxy first, then its chain) and a key.  It is
usable when it is a regular file this process can read, not writable by group or
others (a writable proxy can be swapped for someone else's), and no certificate in it
has expired.  ``notAfter`` is read straight from the DER with a few lines of ASN.1,
so no crypto library is needed.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

MAX_PROXY_BYTES = 1 << 20
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)
_UTCTIME, _GENERALIZEDTIME, _CONTEXT_0 = 0x17, 0x18, 0xA0


class ProxyUnusable(Exception):
    """The proxy cannot be used; the message says why and what to do."""


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4 or pos + n > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _asn1_time(tag: int, raw: bytes) -> datetime:
    text = raw.decode("ascii")
    if tag == _UTCTIME:  # YYMMDDHHMMSSZ; RFC 5280: 50-99 are 19xx
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZEDTIME:
        raise ValueError(f"unexpected time tag 0x{tag:02x}")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def not_after(der: bytes) -> datetime:
    """The ``notAfter`` of one DER certificate."""
    _, pos, _ = _tlv(der, 0)  # Certificate
    _, pos, _ = _tlv(der, pos)  # tbsCertificate
    tag, _, end = _tlv(der, pos)
    if tag == _CONTEXT_0:  # explicit version
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, pos = _tlv(der, pos)
    _, pos, _ = _tlv(der, pos)  # validity
    _, _, pos = _tlv(der, pos)  # notBefore
    tag, start, end = _tlv(der, pos)
    return _asn1_time(tag, der[start:end])


def expiry(pem: bytes) -> datetime:
    """The earliest ``notAfter`` of the certificates in a PEM blob."""
    blocks = _PEM_CERT.findall(pem)
    if not blocks:
        raise ValueError("no certificate in it")
    return min(not_after(base64.b64decode(b, validate=False)) for b in blocks)


def check(path: Path, *, now: datetime | None = None) -> datetime:
    """Return when the proxy at ``path`` expires, or raise :class:`ProxyUnusable`."""
    where = f"x509 proxy {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ProxyUnusable(f"{where} does not exist; create it with voms-proxy-init") from None
    except OSError as exc:
        raise ProxyUnusable(f"{where} cannot be examined: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ProxyUnusable(f"{where} is not a regular file")
    if st.st_mode & 0o022:
        raise ProxyUnusable(
            f"{where} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"chmod 600 it"
        )
    try:
        with open(path, "rb") as f:
            pem = f.read(MAX_PROXY_BYTES)
    except OSError as exc:
        raise ProxyUnusable(f"{where} cannot be read: {exc.strerror}") from None
    try:
        ends = expiry(pem)
    except (ValueError, IndexError) as exc:
        raise ProxyUnusable(f"{where} is not a PEM certificate file: {exc}") from None
    now = now or datetime.now(UTC)
    if ends <= now:
        raise ProxyUnusable(
            f"{where} expired at {ends:%Y-%m-%dT%H:%M:%SZ}; renew it with voms-proxy-init"
        )
    return ends
