"""What a doer gets besides its input: the :class:`Job` it runs as."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
from loguru import logger

from opsagent.credential import Credential
from opsagent.private import PrivateDir, private_dir


class Notes(Protocol):
    """Durable per-job notes (the journal, or a dict in tests and ``opsagent do``)."""

    def put_note(self, job_id: str, key: str, value: str) -> None: ...

    def get_note(self, job_id: str, key: str) -> str | None: ...


@attrs.define
class MemoryNotes:
    notes: dict[tuple[str, str], str] = attrs.Factory(dict)

    def put_note(self, job_id: str, key: str, value: str) -> None:
        self.notes[(job_id, key)] = value

    def get_note(self, job_id: str, key: str) -> str | None:
        return self.notes.get((job_id, key))


@attrs.frozen
class Job:
    """One run of a capability.

    ``env`` is the environment for programs the doer starts (an allow-list plus the
    declared credentials, never the host's whole environment).  ``remember`` stores a
    value durably with the job *before* the doer goes on, so that a redelivered request
    can ``recall`` it instead of repeating work that must not happen twice.  ``attempt``
    counts this host's deliveries of the request; ``interrupted`` is true when an earlier
    run may have been cut short (see ``Capability.reconcile``).
    """

    id: str
    msg_type: str
    cache_dir: Path
    time_limit: float
    config: Any = None
    credentials: Mapping[str, Credential] = attrs.Factory(dict)
    env: Mapping[str, str] = attrs.Factory(dict)
    notes: Notes = attrs.Factory(MemoryNotes)
    attempt: int = 1
    interrupted: bool = False

    def credential(self, name: str) -> Credential:
        try:
            return self.credentials[name]
        except KeyError:
            raise LookupError(
                f"credential {name!r} was not declared by {self.msg_type} or is not available"
            ) from None

    def remember(self, key: str, value: str) -> None:
        self.notes.put_note(self.id, key, value)

    def recall(self, key: str) -> str | None:
        return self.notes.get_note(self.id, key)

    def private_dir(self) -> contextlib.AbstractContextManager[PrivateDir]:
        """A fresh directory only this user can enter, off the shared cache (on tmpfs
        where there is one), removed when the ``with`` block ends: for a secret that a
        program must read from a file.  See :mod:`opsagent.private`."""
        return private_dir({**os.environ, **self.env})

    @property
    def log(self) -> Any:
        return logger.bind(job_id=self.id, msg_type=self.msg_type)
