"""Fake credentials for tests: files with made-up secrets, handed over the way the host does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from opsagent.credential import Credential


class FakeCredentials(Mapping[str, Credential]):
    """Credential files under one directory, readable only by the owner, by name.

    The directory is laid out like systemd's ``$CREDENTIALS_DIRECTORY`` (one file per
    name), so a test may also point that variable at :attr:`directory`.  The mapping
    goes straight to :func:`opsagent.testing.make_job`; :meth:`config` gives the
    ``[credentials.<name>]`` sections a :class:`~opsagent.testing.Harness` needs.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._creds: dict[str, Credential] = {}

    def add(self, name: str, secret: str | None = None) -> Credential:
        """Write ``secret`` (default ``fake-<name>``) as credential ``name``; replaces one."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / name
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"fake-{name}" if secret is None else secret)
        cred = Credential(name, path=path)
        self._creds[name] = cred
        return cred

    def provide(self, capability: Any) -> FakeCredentials:
        """Add a fake for each credential ``capability`` declares that is not here yet."""
        for name in capability.credentials:
            if name not in self._creds:
                self.add(name)
        return self

    def config(self) -> dict[str, dict[str, str]]:
        """The host configuration sections that point at these files."""
        return {
            f"credentials.{_toml_key(name)}": {"file": str(c.path)}
            for name, c in self._creds.items()
        }

    def __getitem__(self, name: str) -> Credential:
        return self._creds[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._creds)

    def __len__(self) -> int:
        return len(self._creds)


def _toml_key(name: str) -> str:
    """``name`` as one TOML key: bare when it may be, quoted when it has a dot."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
