"""Credentials by name: configuration maps each declared name to a source.

A source is a file path, an environment variable of the host, or
``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``), which is also where a
name without configuration is looked for; failing that, where the old agent's variables
say (:data:`LEGACY_SOURCES`: ``X509_USER_PROXY``, ``$PANDA_CONFIG_ROOT/.token``,
``SWFMON_TOKEN``...).  A file is read where it is, each time it is needed: a proxy
re-made by cron or a token refreshed in place is used by the next job without a restart
(each job process gets its own copy, :func:`snapshot`).  A job receives only the credentials its
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

import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from opsagent.credential import Credential, utc  # noqa: F401 - utc: the host shows expiry times by it
from opsagent.credential_check import (  # noqa: F401 - the host's checks live in the contract
    MAX_BYTES,
    CredentialError,
    CredentialExpired,
    CredentialMissing,
    CredentialRefused,
    expiry_of,
)
from opsagent.credential_check import check_file as _check_file
from opsagent.credential_check import expiry_in as _expiry
from opsagent.credential_check import read_file as _read
from opsagent.private import PrivateDir


@attrs.frozen
class CredentialSource:
    """Where one credential comes from; exactly one of ``file`` and ``env`` (neither: systemd)."""

    file: str | None = None
    env: str | None = None


#: Where the old agent found each credential: a variable naming the file (``path``), the
#: directory holding it (``dir``, with the file's name), or holding the value (``value``).
#: Used for a credential that neither the configuration nor ``$CREDENTIALS_DIRECTORY``
#: provides, so a host started with the old unit's environment file finds them all.
LEGACY_SOURCES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "x509_proxy": (("X509_USER_PROXY", "path", ""),),
    "panda_oidc_token": (("PANDA_CONFIG_ROOT", "dir", ".token"),),
    "swf_api_token": (
        ("SWFMON_TOKEN", "value", ""),
        ("SWF_MONITOR_TOKEN", "value", ""),
        ("SWF_API_TOKEN", "value", ""),
    ),
    "rucio_userpass": (("JLAB_RUCIO_PASSWORD", "value", ""),),
}


def legacy_source(name: str) -> tuple[CredentialSource, str] | None:
    """The source the old agent's variables give for ``name`` now, and a description."""
    for variable, how, leaf in LEGACY_SOURCES.get(name, ()):
        raw = os.environ.get(variable)
        if not raw:
            continue
        if how == "value":
            return CredentialSource(env=variable), f"environment variable {variable}"
        path = Path(raw).expanduser() / leaf if how == "dir" else Path(raw).expanduser()
        return CredentialSource(file=str(path)), f"file {path.absolute()} (from ${variable})"
    return None


def _legacy_names(name: str) -> str:
    names = [v for v, _, _ in LEGACY_SOURCES.get(name, ())]
    return f", or set {' or '.join(names)}" if names else ""


def env_name(name: str) -> str:
    return "OPSAGENT_CREDENTIAL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


# -- finding one credential --------------------------------------------------------------


def locate(name: str, sources: Mapping[str, CredentialSource]) -> Credential:
    """Find one credential and read its expiry; it may be expired (see :func:`resolve`).

    Raises :class:`CredentialMissing` (saying where it looked) or
    :class:`CredentialRefused` (saying what is unsafe and how to fix it).
    """
    source = sources.get(name, CredentialSource())
    described = ""
    if not (source.env or source.file):
        creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        legacy = None if creds_dir and (Path(creds_dir) / name).exists() else legacy_source(name)
        if legacy is not None:
            source, described = legacy
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
            source=described or f"environment variable {source.env}",
        )
    systemd = False
    if source.file:
        # Absolute: jobs run elsewhere, and a child tells a path from a value by its '/'.
        path = Path(source.file).expanduser().absolute()
        where = described or f"file {path}"
    else:
        creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds_dir:
            raise CredentialMissing(
                f"credential {name!r}: not configured; add [credentials.{name}] file = ... "
                f"or env = ... to the config, or LoadCredential={name}:... to the unit"
                f"{_legacy_names(name)}"
            )
        path = Path(creds_dir) / name
        where = f"systemd credential {path}"
        systemd = True
    st = _check_file(name, path, systemd=systemd)
    kind, expires = _expiry(name, _read(name, path), where)
    return Credential(name, path=path, kind=kind, expires_at=expires, source=where, mode=st.st_mode)


def resolve(
    name: str, sources: Mapping[str, CredentialSource], *, now: float | None = None
) -> Credential:
    """Find one usable credential, or raise a :class:`CredentialError` saying why not."""
    cred = locate(name, sources)
    if cred.expired(now):
        raise CredentialExpired(cred)
    return cred


#: A credential closer than this to its expiry is a warning (``opsagent selftest``, the
#: ``credential_expiry_check`` capability, the host's log).
EXPIRY_WARNING = 86400.0


@attrs.frozen
class Expiry:
    """How one credential stands: ``ok``, ``warning`` (expires within the warning
    time), ``expired``, ``missing``, ``refused`` (unsafe or unreadable) or ``absent``
    (optional and not configured)."""

    credential: str
    status: str
    detail: str
    days_left: float | None = None
    usable: Credential | None = None

    @property
    def level(self) -> str:
        """``ok``, ``warning`` or ``error``."""
        if self.status in ("ok", "absent"):
            return "ok"
        return "warning" if self.status == "warning" else "error"


def expiry(
    name: str,
    sources: Mapping[str, CredentialSource],
    *,
    now: float | None = None,
    optional: bool = False,
    warning: float = EXPIRY_WARNING,
) -> Expiry:
    """The one expiry check of a credential (see :class:`Expiry`)."""
    now = time.time() if now is None else now
    try:
        cred = locate(name, sources)
    except CredentialMissing as exc:
        if optional:
            return Expiry(name, "absent", f"optional, not configured ({exc})")
        return Expiry(name, "missing", str(exc))
    except CredentialError as exc:
        return Expiry(name, "refused", str(exc))
    detail = cred.describe(now)
    left = None if cred.expires_at is None else round((cred.expires_at - now) / 86400, 2)
    if cred.expired(now):
        return Expiry(name, "expired", f"{detail}; renew it", left)
    if cred.expires_at is not None and cred.expires_at - now < warning:
        return Expiry(name, "warning", f"{detail}; renew it soon", left, cred)
    return Expiry(name, "ok", detail, left, cred)


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


#: Reads of a file being renewed while it is copied, before giving up on a stable copy.
COPY_TRIES = 5


def _stable_read(path: Path) -> bytes:
    """The file's bytes, read until two reads agree: a renewal that rewrites the file in
    place (not by rename) is not caught half-way."""
    last = _read(path.name, path)
    for _ in range(COPY_TRIES):
        time.sleep(0.01)
        again = _read(path.name, path)
        if again == last:
            return again
        last = again
    raise CredentialRefused(f"{path} kept changing while it was read; try again")


def snapshot(creds: Mapping[str, Credential], into: PrivateDir) -> dict[str, Credential]:
    """Each file credential copied into the private directory ``into`` (0600), as it is
    now; values are kept as they are.  A job works with its copies, so a credential
    renewed while it runs does not change under it, and the next job copies the new one.
    """
    out = {}
    for name, cred in creds.items():
        if cred.path is None:
            out[name] = cred
            continue
        copy = into.write(name, _stable_read(cred.path))
        out[name] = attrs.evolve(cred, path=copy, origin=cred.origin or cred.path)
    return out


def secrets_of(sources: Mapping[str, CredentialSource]) -> list[str]:
    """Every secret value the configured sources and ``$CREDENTIALS_DIRECTORY`` hold now.

    Best effort and never raising: it feeds redaction, which must know a secret even
    when the credential itself is refused or expired.
    """
    out: list[str] = []
    paths: list[Path] = []
    every = list(sources.values())
    for name in LEGACY_SOURCES:
        legacy = None if name in sources else legacy_source(name)
        if legacy is not None:
            every.append(legacy[0])
    for source in every:
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
