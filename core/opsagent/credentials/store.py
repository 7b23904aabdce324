"""Credentials by name: configuration maps each declared name to a source.

A source is a file path, an environment variable of the host, or
``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``), which is also where a
name without configuration is looked for.  A job receives only the credentials its
capability declared, as ``OPSAGENT_CREDENTIAL_<NAME>`` in its environment: the path of
the file, or for an environment source the value itself.  Values never reach a command
line, a log line or an event.

A file is refused when it is group- or world-writable or not owned by the user the host
runs as (0600 and 0400 are both fine): whoever else can write it can make a job act
with their secret.  The expiry of an x509 proxy (the earliest ``notAfter`` of its
certificate chain) and of a JWT (``exp``, also inside panda-client's JSON token file)
is read, so an expired credential makes its capability unavailable with a reason
("x509_proxy expired 2026-06-01 12:00 UTC ...") instead of failing its jobs half-way.
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
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from opsagent.credential import Credential, utc  # noqa: F401 - utc: the host shows expiry times by it

#: The most a credential file may hold (a proxy with its chain is a few KiB).
MAX_BYTES = 1 << 20

_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


@attrs.frozen
class CredentialSource:
    """Where one credential comes from; exactly one of ``file`` and ``env`` (neither: systemd)."""

    file: str | None = None
    env: str | None = None


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


def env_name(name: str) -> str:
    return "OPSAGENT_CREDENTIAL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


# -- reading an expiry -------------------------------------------------------------------


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


# -- finding one credential --------------------------------------------------------------


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_file(name: str, path: Path, *, systemd: bool) -> os.stat_result:
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


def _read(name: str, path: Path) -> bytes:
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


def locate(name: str, sources: Mapping[str, CredentialSource]) -> Credential:
    """Find one credential and read its expiry; it may be expired (see :func:`resolve`).

    Raises :class:`CredentialMissing` (saying where it looked) or
    :class:`CredentialRefused` (saying what is unsafe and how to fix it).
    """
    source = sources.get(name, CredentialSource())
    if source.env:
        value = os.environ.get(source.env)
        if not value:
            raise CredentialMissing(
                f"credential {name!r}: environment variable {source.env} is not set"
            )
        kind, expires = _expiry(name, value.encode(), f"environment variable {source.env}")
        return Credential(
            name,
            value=value,
            kind=kind,
            expires_at=expires,
            source=f"environment variable {source.env}",
        )
    systemd = False
    if source.file:
        # Absolute: jobs run elsewhere, and a child tells a path from a value by its '/'.
        path = Path(source.file).expanduser().absolute()
        where = f"file {path}"
    else:
        creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds_dir:
            raise CredentialMissing(
                f"credential {name!r}: not configured; add [credentials.{name}] file = ... "
                f"or env = ... to the config, or LoadCredential={name}:... to the unit"
            )
        path = Path(creds_dir) / name
        where = f"systemd credential {path}"
        systemd = True
    st = _check_file(name, path, systemd=systemd)
    kind, expires = _expiry(name, _read(name, path), where)
    return Credential(name, path=path, kind=kind, expires_at=expires, source=where, mode=st.st_mode)


def _expiry(name: str, data: bytes, where: str) -> tuple[str, float | None]:
    try:
        return expiry_of(data)
    except ValueError as exc:
        raise CredentialRefused(f"credential {name!r} ({where}): {exc}") from None


def resolve(
    name: str, sources: Mapping[str, CredentialSource], *, now: float | None = None
) -> Credential:
    """Find one usable credential, or raise a :class:`CredentialError` saying why not."""
    cred = locate(name, sources)
    if cred.expired(now):
        raise CredentialExpired(cred)
    return cred


# -- what a capability gets ---------------------------------------------------------------


def for_capability(
    names: Iterable[str],
    optional: Iterable[str],
    sources: Mapping[str, CredentialSource],
    *,
    now: float | None = None,
) -> tuple[dict[str, Credential], str | None, list[Credential]]:
    """``(usable, problem, found)`` for one capability's declared credential names.

    ``problem`` is ``None`` when the capability can run.  An optional credential that
    is simply not there is left out; one that is there but refused or expired is a
    problem like any other, because the operator meant it to be used.  ``found`` lists
    every credential that was located, expired or not (for redaction and metrics).
    """
    skip = set(optional)
    usable: dict[str, Credential] = {}
    found: list[Credential] = []
    problems: list[str] = []
    for name in names:
        try:
            cred = locate(name, sources)
        except CredentialMissing as exc:
            if name not in skip:
                problems.append(str(exc))
            continue
        except CredentialError as exc:
            problems.append(str(exc))
            continue
        found.append(cred)
        if cred.expired(now):
            problems.append(cred.expiry_reason())
        else:
            usable[name] = cred
    return usable, "; ".join(problems) or None, found


class Availability:
    """Which capabilities can run as far as their credentials go, kept current.

    ``usable[msg_type]`` is the mapping handed to jobs (updated in place, so whoever
    holds it sees renewals); ``unavailable`` maps a msg_type to its reason.
    """

    def __init__(
        self,
        declared: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]],
        sources: Mapping[str, CredentialSource],
    ) -> None:
        self.declared = dict(declared)
        self.sources = sources
        self.usable: dict[str, dict[str, Credential]] = {m: {} for m in declared}
        self.unavailable: dict[str, str] = {}
        self.found: dict[str, Credential] = {}
        #: msg_types whose usable credentials changed in the last refresh.
        self.handed_over_changed: set[str] = set()

    def refresh(self, now: float | None = None) -> dict[str, str | None]:
        """Look at every credential again; return what changed (msg_type -> reason or None)."""
        now = time.time() if now is None else now
        changed: dict[str, str | None] = {}
        self.handed_over_changed = set()
        for msg_type, (names, optional) in self.declared.items():
            usable, problem, found = for_capability(names, optional, self.sources, now=now)
            for cred in found:
                self.found[cred.name] = cred
            held = self.usable[msg_type]
            if held != usable:
                # In place and without emptying it first: running thread jobs read it.
                for name in [n for n in held if n not in usable]:
                    del held[name]
                held.update(usable)
                self.handed_over_changed.add(msg_type)
            if self.unavailable.get(msg_type) != problem:
                if problem is None:
                    self.unavailable.pop(msg_type, None)
                else:
                    self.unavailable[msg_type] = problem
                changed[msg_type] = problem
        return changed

    def next_expiry(self, now: float | None = None) -> float | None:
        """The earliest expiry still ahead among usable credentials."""
        now = time.time() if now is None else now
        ahead = [
            c.expires_at
            for held in self.usable.values()
            for c in held.values()
            if c.expires_at is not None and c.expires_at > now
        ]
        return min(ahead) if ahead else None

    def expiries(self) -> dict[str, float]:
        """Expiry time of each located credential that has one."""
        return {n: c.expires_at for n, c in self.found.items() if c.expires_at is not None}


def to_env(creds: Mapping[str, Credential]) -> dict[str, str]:
    """The environment entries that hand ``creds`` to a child process."""
    out = {}
    for cred in creds.values():
        out[env_name(cred.name)] = str(cred.path) if cred.path is not None else cred.value or ""
    return out


def from_env(names: tuple[str, ...], environ: Mapping[str, str]) -> dict[str, Credential]:
    """Rebuild the credentials a child was handed (inverse of :func:`to_env`)."""
    out = {}
    for name in names:
        raw = environ.get(env_name(name))
        if raw is None:
            continue
        # A file source is always handed over as an absolute path.
        out[name] = (
            Credential(name, path=Path(raw))
            if raw.startswith("/") and Path(raw).is_file()
            else Credential(name, value=raw)
        )
    return out


def secrets_of(sources: Mapping[str, CredentialSource]) -> list[str]:
    """Every secret value the configured sources and ``$CREDENTIALS_DIRECTORY`` hold now.

    Best effort and never raising: it feeds redaction, which must know a secret even
    when the credential itself is refused or expired.
    """
    out: list[str] = []
    paths: list[Path] = []
    for source in sources.values():
        if source.env:
            value = os.environ.get(source.env)
            if value:
                out.append(value)
        elif source.file:
            paths.append(Path(source.file).expanduser())
    creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds_dir:
        try:
            paths.extend(p for p in Path(creds_dir).iterdir())
        except OSError:
            pass
    for path in paths:
        try:
            with open(path, "rb") as f:
                out.append(f.read(MAX_BYTES).decode("utf-8", "replace"))
        except OSError:
            continue
    return out
