"""Checking a credential, the host's way: one implementation for the host and for jobs.

The host checks every credential before it offers a capability (see
:mod:`opsagent.credentials.store`, which uses the functions here): a file must be a
regular file that only the host's user can write, and an x509 certificate or a JWT must
not have expired.  A job runs later, possibly much later, and gets only the path or the
value.  A doer that must not start with a credential that has expired meanwhile (an x509
proxy handed to ``xrdcp``) calls :func:`check_credential`, which applies the same checks
and reads the same expiry (the earliest ``notAfter`` of the certificates, through
``cryptography``; a JWT's ``exp``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pwd
import re
import stat
import time
from pathlib import Path

import attrs

from opsagent.credential import Credential

__all__ = ["CredentialError", "check_credential"]

#: The most a credential file may hold (a proxy with its chain is a few KiB).
MAX_BYTES = 1 << 20

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class CredentialError(LookupError):
    """A credential that cannot be used; the message says why and where, never the value."""


class CredentialMissing(CredentialError):
    """Not configured, or its source does not exist."""


class CredentialRefused(CredentialError):
    """Found but unsafe (mode, owner) or unreadable."""


class CredentialExpired(CredentialError):
    """Found and safe, but past its ``notAfter`` / ``exp``."""

    def __init__(self, credential: Credential) -> None:
        super().__init__(credential.expiry_reason())
        self.credential = credential


def _jwt_exp(token: str) -> float | None:
    """``exp`` of a JWT, or ``None`` when ``token`` is not a JWT or has no numeric ``exp``."""
    if not _JWT.match(token):
        return None
    try:
        header_raw, payload_raw = token.split(".")[:2]
        header = json.loads(base64.urlsafe_b64decode(header_raw + "=" * (-len(header_raw) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(payload_raw + "=" * (-len(payload_raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or "alg" not in header or not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def _is_jwt(token: str) -> bool:
    if not _JWT.match(token):
        return False
    head = token.split(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def expiry_of(data: bytes) -> tuple[str, float | None]:
    """``(kind, expires_at)`` of a credential's content.

    PEM certificates (an x509 proxy holds the proxy, its key and the chain): the earliest
    ``notAfter``.  A JWT, or a JSON object whose ``id_token`` / ``access_token`` is one
    (panda-client's token file): its ``exp``.  Raises ``ValueError`` -- without any of
    the content -- for PEM certificates that cannot be parsed.
    """
    if b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography import x509

        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ValueError("it holds a PEM certificate that cannot be parsed") from None
        return "x509", min(c.not_valid_after_utc.timestamp() for c in certs)
    text = data.decode("utf-8", "replace").strip()
    if _is_jwt(text):
        return "jwt", _jwt_exp(text)
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return "secret", None
        if isinstance(doc, dict):
            for key in ("id_token", "access_token"):
                token = doc.get(key)
                if isinstance(token, str) and _is_jwt(token):
                    return "jwt", _jwt_exp(token)
    return "secret", None


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_file(name: str, path: Path, *, systemd: bool) -> os.stat_result:
    """Refuse a file that someone other than the host's user could have written."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CredentialMissing(f"credential {name!r}: {path} does not exist") from None
    except OSError as exc:
        raise CredentialRefused(
            f"credential {name!r}: cannot stat {path}: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialRefused(f"credential {name!r}: {path} is not a regular file")
    if st.st_mode & 0o022:
        raise CredentialRefused(
            f"credential {name!r}: {path} has mode {stat.S_IMODE(st.st_mode):04o}, which lets "
            f"{'others' if st.st_mode & 0o002 else 'its group'} write it; "
            f"chmod 0600 {path} (or 0400)"
        )
    me = os.geteuid()
    # systemd writes LoadCredential= files itself; where it cannot chown them to the
    # service's user it leaves them root's, readable through an ACL.
    if st.st_uid != me and not (systemd and st.st_uid == 0):
        raise CredentialRefused(
            f"credential {name!r}: {path} is owned by {_owner(st.st_uid)}, not by "
            f"{_owner(me)} that runs the host; chown it, or hand it over with "
            f"LoadCredential={name}:{path}"
        )
    if not os.access(path, os.R_OK):
        raise CredentialRefused(f"credential {name!r}: {path} is not readable by {_owner(me)}")
    return st


def read_file(name: str, path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CredentialRefused(
            f"credential {name!r}: cannot read {path}: {exc.strerror}"
        ) from None
    if len(data) > MAX_BYTES:
        raise CredentialRefused(f"credential {name!r}: {path} is larger than {MAX_BYTES} bytes")
    return data


def expiry_in(name: str, data: bytes, where: str) -> tuple[str, float | None]:
    try:
        return expiry_of(data)
    except ValueError as exc:
        raise CredentialRefused(f"credential {name!r} ({where}): {exc}") from None


def _systemd(path: Path) -> bool:
    """Whether ``path`` is a systemd credential (which systemd may leave owned by root)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and path.parent == Path(directory):
        return True
    return path.parts[:3] == ("/", "run", "credentials")


def check_credential(
    credential: Credential, *, kind: str | None = None, now: float | None = None
) -> Credential:
    """``credential`` as the host would accept it now, with its ``kind`` and ``expires_at``.

    Raises :class:`CredentialError` (a ``LookupError``) saying what is wrong and what to
    do: a file that is missing, not a regular file, writable by others, owned by
    someone else or unreadable; content that is not ``kind`` (``"x509"``: it must hold a
    certificate); an expiry in the past.
    """
    if credential.path is not None:
        path = credential.path
        where = f"file {path}"
        st = check_file(credential.name, path, systemd=_systemd(path))
        data = read_file(credential.name, path)
        mode: int | None = st.st_mode
    else:
        where = credential.source or "a value"
        data = (credential.value or "").encode()
        mode = None
    found_kind, expires_at = expiry_in(credential.name, data, where)
    if kind is not None and found_kind != kind:
        what = {"x509": "x509 certificate", "jwt": "JWT"}.get(kind, kind)
        raise CredentialRefused(f"credential {credential.name!r} ({where}) holds no {what}")
    checked = attrs.evolve(
        credential, kind=found_kind, expires_at=expires_at, source=where, mode=mode
    )
    if checked.expired(time.time() if now is None else now):
        raise CredentialExpired(checked)
    return checked
