"""Running a panda-client program: its own session, a time limit, each line as it comes.

prun prints ``jediTaskID=<n>`` the moment PanDA has accepted the task, and may then go on
for a while (or be killed: OOM, the host dying, systemd's final kill).  So its output is
read as it is written and each line handed to ``on_line`` at once, in the calling thread,
so that the doer notes the id durably before anything else can happen to the job.

The program gets a session of its own, so that at the time limit its whole group --
anything it started -- gets SIGTERM, then SIGKILL after the grace period; whatever it
leaves in its group when it exits by itself is killed too.  Arguments are an argv list:
never a shell.  Output is kept up to ``output_cap`` bytes (the head and the tail) for the
reason of a failure.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs

#: A line longer than this is handed over in pieces (prun's lines are short).
MAX_LINE = 64 * 1024
_POLL = 0.05


@attrs.frozen
class Finished:
    """How the program ended; ``returncode`` is negative for a signal, as in subprocess."""

    returncode: int
    output: str
    timed_out: bool
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a process group; False when it is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class _Kept:
    """The first and the last ``cap // 2`` bytes of the output."""

    def __init__(self, cap: int) -> None:
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.half
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes dropped ...]\n".encode() if self.dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", "replace")


def _read_lines(fd: int, out: queue.SimpleQueue[bytes | None]) -> None:
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            out.put(line + b"\n")
        while len(pending) > MAX_LINE:
            out.put(pending[:MAX_LINE])
            pending = pending[MAX_LINE:]
    if pending:
        out.put(pending)
    out.put(None)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    timeout: float,
    grace: float,
    output_cap: int,
    on_line: Callable[[str], None] = lambda _line: None,
    on_start: Callable[[int], None] = lambda _pid: None,
) -> Finished:
    """Run ``argv`` to its end or to ``timeout`` seconds, calling ``on_line`` per line."""
    started = time.monotonic()
    child = subprocess.Popen(  # noqa: S603 - argv list, never a shell
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    pgid = child.pid
    assert child.stdout is not None
    lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_lines, args=(child.stdout.fileno(), lines), daemon=True, name="prun-output"
    )
    reader.start()
    on_start(pgid)
    kept = _Kept(output_cap)

    def take(block: float) -> bool:
        """Hand over the lines that came; False once the output has ended."""
        try:
            item = lines.get(timeout=block) if block > 0 else lines.get_nowait()
        except queue.Empty:
            return True
        while item is not None:
            kept.add(item)
            on_line(item.decode("utf-8", "replace"))
            try:
                item = lines.get_nowait()
            except queue.Empty:
                return True
        return False

    timed_out = False
    deadline = started + timeout
    open_output = True
    try:
        while child.poll() is None:
            if time.monotonic() >= deadline:
                timed_out = True
                _terminate(pgid, grace, child)
                break
            if open_output:
                open_output = take(_POLL)
            else:
                time.sleep(_POLL)
        child.wait()
    finally:
        # Whatever the program left in its group goes too (and all of it when ``on_line``
        # raised); then the pipe reaches its end.
        kill_group(pgid)
    reader.join(timeout=2.0)
    while open_output and take(0):
        pass
    child.stdout.close()
    return Finished(
        returncode=child.returncode,
        output=kept.text(),
        timed_out=timed_out,
        duration=time.monotonic() - started,
    )


def _terminate(pgid: int, grace: float, child: subprocess.Popen[bytes]) -> None:
    if not kill_group(pgid, signal.SIGTERM):
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        child.poll()  # an exited but unreaped leader still counts as a member
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)
    kill_group(pgid)


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
            kill_group(pgid)

    def _handler(self, _signum: int, _frame: object) -> None:
        self.stopped = True
        if self.pgid is not None:
            kill_group(self.pgid)

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
