"""Taking prun down with the job: the host stops a job by signalling its process group,
which misses prun, started (by :func:`opsagent.run`) in a session of its own so that its
own limit kills everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Stopper:
    """Takes the program down when this job is told to stop (SIGTERM, or SIGINT under
    ``opsagent do``).

    The program runs in a session of its own (so that its own limit kills everything it
    started), which a signal to the job's process group -- the host stopping the job --
    does not reach: without this, prun would go on submitting with nobody to note its id.
    The handler kills the program's group at once; the doer still notes any id it printed.
    Only the main thread may install handlers; elsewhere this is a no-op.
    """

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.stopped = False

    def started(self, pgid: int) -> None:
        self.pgid = pgid
        if self.stopped:
            _kill_group(pgid)

    def _handler(self, _signum: int, _frame: object) -> None:
        self.stopped = True
        if self.pgid is not None:
            _kill_group(self.pgid)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stopper]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {
            sig: signal.signal(sig, self._handler) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
