"""The handle a job gets for each credential its capability declared.

The host resolves a credential (see :mod:`opsagent.credentials.store`) into a
:class:`Credential`: a file path, or a value taken from the host's environment, with
what it knows of its kind and expiry.  A doer reads it with ``job.credential(name)``;
its ``repr`` never shows the value.
"""

from __future__ import annotations

import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import attrs

TIME_FORMAT = "%Y-%m-%d %H:%M UTC"


def utc(ts: float) -> str:
    """``2026-06-01 12:00 UTC``: how expiry times are shown."""
    return datetime.fromtimestamp(ts, UTC).strftime(TIME_FORMAT)


@attrs.frozen(repr=False)
class Credential:
    """A resolved credential: a file path, or a value taken from the host's environment.

    ``kind`` is ``x509`` (a certificate or proxy), ``jwt`` or ``secret`` (anything else);
    ``expires_at`` is a Unix time, or ``None`` when the credential does not say.
    """

    name: str
    path: Path | None = None
    value: str | None = None
    kind: str = "secret"
    expires_at: float | None = None
    #: Where it was found, for messages: ``file /etc/x``, ``environment variable X``...
    source: str = ""
    mode: int | None = None
    #: For a job's own copy of a file credential (``path`` is then the copy): the live
    #: file it was taken from.  Whoever renews the credential writes the new one there,
    #: atomically (a new file in the same directory renamed over it); the next job gets it.
    origin: Path | None = None

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else "value=<hidden>"
        return f"Credential({self.name!r}, {where})"

    def read(self) -> str:
        """The secret itself; for doers that must put it in a request."""
        if self.value is not None:
            return self.value
        assert self.path is not None
        return self.path.read_text().strip()

    def expired(self, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return self.expires_at <= (time.time() if now is None else now)

    def expiry_reason(self) -> str:
        """``x509_proxy expired 2026-06-01 12:00 UTC (x509 certificate in /path); renew it``."""
        assert self.expires_at is not None
        what = {"x509": "x509 certificate", "jwt": "token"}.get(self.kind, "credential")
        return f"{self.name} expired {utc(self.expires_at)} ({what} from {self.source}); renew it"

    def describe(self, now: float | None = None) -> str:
        """Where it is, its mode and its expiry -- never its value (``opsagent selftest``)."""
        parts = [self.source]
        if self.mode is not None:
            parts.append(f"mode {stat.S_IMODE(self.mode):04o}")
        if self.kind != "secret":
            parts.append({"x509": "x509 certificate", "jwt": "JWT"}[self.kind])
        if self.expires_at is not None:
            now = time.time() if now is None else now
            left = self.expires_at - now
            when = utc(self.expires_at)
            parts.append(f"expired {when}" if left <= 0 else f"expires {when} (in {_span(left)})")
        elif self.kind != "secret":
            parts.append("no expiry in it")
        return ", ".join(parts)


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{max(seconds, 0) / 60:.0f} min"
