"""Credentials by name: configuration maps each declared name to a source.

A source is a file path, an environment variable of the host, or
``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``), which is also where a
name without configuration is looked for.  A job receives only the credentials its
capability declared, as ``OPSAGENT_CREDENTIAL_<NAME>`` in its environment: the path of
the file, or for an environment source the value itself.  Values never reach a command
line, a log line or an event.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import attrs


@attrs.frozen
class CredentialSource:
    """Where one credential comes from; exactly one of ``file`` and ``env`` (neither: systemd)."""

    file: str | None = None
    env: str | None = None


@attrs.frozen(repr=False)
class Credential:
    """A resolved credential: a file path, or a value taken from the host's environment."""

    name: str
    path: Path | None = None
    value: str | None = None

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else "value=<hidden>"
        return f"Credential({self.name!r}, {where})"

    def read(self) -> str:
        """The secret itself; for doers that must put it in a request."""
        if self.value is not None:
            return self.value
        assert self.path is not None
        return self.path.read_text().strip()


class CredentialMissing(LookupError):
    pass


def env_name(name: str) -> str:
    return "OPSAGENT_CREDENTIAL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def resolve(name: str, sources: Mapping[str, CredentialSource]) -> Credential:
    """Find one credential or raise :class:`CredentialMissing` saying where it looked."""
    source = sources.get(name, CredentialSource())
    if source.env:
        value = os.environ.get(source.env)
        if not value:
            raise CredentialMissing(
                f"credential {name!r}: environment variable {source.env} is not set"
            )
        return Credential(name, value=value)
    if source.file:
        path = Path(source.file).expanduser()
    else:
        creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds_dir:
            raise CredentialMissing(
                f"credential {name!r}: not configured; add [credentials.{name}] file = ... "
                f"or env = ... to the config, or LoadCredential={name}:... to the unit"
            )
        path = Path(creds_dir) / name
    if not path.is_file() or not os.access(path, os.R_OK):
        raise CredentialMissing(f"credential {name!r}: {path} is not a readable file")
    return Credential(name, path=path)


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
