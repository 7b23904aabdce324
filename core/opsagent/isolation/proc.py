"""Running a program under a time limit, in its own session, with bounded output capture.

The program gets a new session (so a new process group).  At the limit, or when the
caller's ``cancel`` event is set, the whole group gets SIGTERM, then SIGKILL after a
grace period, so grandchildren (``xrdcp``, ``prun``) die too.  When the program exits by
itself, whatever it left behind in its group is killed as well.  Output (stdout and
stderr together) is kept up to ``output_cap`` bytes: the head and the tail, with the
number of bytes dropped in between.  Arguments are an argv list: never a shell.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs


class CancelFlag(Protocol):
    """What ``cancel`` must offer: ``threading.Event`` or :class:`opsagent.host.ledger.Flag`."""

    def is_set(self) -> bool: ...


@attrs.frozen
class Completed:
    """How a program ended. ``returncode`` is negative for a signal, as in subprocess."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    timed_out: bool
    cancelled: bool
    duration: float
    dropped_bytes: int = 0
    #: Standard error on its own, when ``run(split_stderr=True)``; ``output`` is then
    #: standard output alone.
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.cancelled

    def tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of output, for an error reason."""
        return self.output[-n:].strip()


class _Capture:
    """Keeps the first and last halves of a byte stream up to ``cap`` bytes."""

    def __init__(self, cap: int) -> None:
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            excess = len(self.tail) - self.half
            if excess > 0:
                del self.tail[:excess]
                self.dropped += excess

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes dropped ...]\n".encode() if self.dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", "replace")


class _Lines:
    """Output cut into lines (a very long one in pieces) for ``run``'s ``on_line``."""

    #: A line longer than this is handed over in pieces.
    MAX_LINE = 64 * 1024

    def __init__(self) -> None:
        self.pending = b""
        self.ready: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        *complete, self.pending = self.pending.split(b"\n")
        for line in complete:
            self.ready.put(line + b"\n")
        while len(self.pending) > self.MAX_LINE:
            self.ready.put(self.pending[: self.MAX_LINE])
            self.pending = self.pending[self.MAX_LINE :]

    def end(self) -> None:
        if self.pending:
            self.ready.put(self.pending)
            self.pending = b""

    def hand_over(self, on_line: Callable[[str], None]) -> None:
        while True:
            try:
                line = self.ready.get_nowait()
            except queue.Empty:
                return
            on_line(line.decode("utf-8", "replace"))


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def terminate_group(pgid: int, grace: float, reap: Callable[[], object] | None = None) -> None:
    """TERM the group, wait up to ``grace`` seconds, then KILL what is left.

    ``reap`` collects the group leader when it is our child: an exited but unreaped
    leader still counts as a member, which would make every kill wait the full grace.
    """
    if not kill_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.02)
    kill_group(pgid, signal.SIGKILL)


#: Process groups started by :func:`run` in this process and still running.  A job
#: process kills them when it is itself terminated (see :mod:`opsagent.isolation.child`), since
#: they are in sessions of their own that the host's kill of the job's group misses.
LIVE_GROUPS: set[int] = set()


def kill_live_groups() -> None:
    for pgid in list(LIVE_GROUPS):
        kill_group(pgid, signal.SIGKILL)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float,
    grace: float = 5.0,
    output_cap: int = 64 * 1024,
    stdin_data: bytes | None = None,
    pass_fds: Sequence[int] = (),
    cancel: CancelFlag | None = None,
    on_start: object = None,
    on_line: Callable[[str], None] | None = None,
    split_stderr: bool = False,
) -> Completed:
    """Run ``argv`` to completion, to ``timeout`` seconds, or until ``cancel`` is set.

    ``on_line`` is handed each line of output as it comes, in the calling thread (so it
    may note what a line says durably before anything else happens to the job); when it
    raises, the program's group is killed and the exception goes on.  ``split_stderr``
    keeps standard error apart (``Completed.stderr``, capped alike) for programs whose
    standard output is a protocol; ``on_line`` then gets the lines of both.
    """
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if split_stderr else subprocess.STDOUT,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
        close_fds=True,
    )
    pgid = proc.pid  # leader of its own new session and group
    LIVE_GROUPS.add(pgid)
    if callable(on_start):
        on_start(proc.pid)
    capture = _Capture(output_cap)
    err_capture = _Capture(output_cap)
    lines = _Lines() if on_line is not None else None
    err_lines = _Lines() if on_line is not None and split_stderr else None
    assert proc.stdout is not None

    def pump(stream: object, into: _Capture, cut: _Lines | None) -> None:
        fd = stream.fileno()  # type: ignore[attr-defined]
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                if cut is not None:
                    cut.end()
                return
            into.feed(chunk)
            if cut is not None:
                cut.feed(chunk)

    readers = [
        threading.Thread(
            target=pump,
            args=(proc.stdout, capture, lines),
            name=f"capture-{proc.pid}",
            daemon=True,
        )
    ]
    if split_stderr:
        readers.append(
            threading.Thread(
                target=pump,
                args=(proc.stderr, err_capture, err_lines),
                name=f"capture-err-{proc.pid}",
                daemon=True,
            )
        )
    for reader in readers:
        reader.start()

    def hand_over() -> None:
        if on_line is None:
            return
        for cut in (lines, err_lines):
            if cut is not None:
                cut.hand_over(on_line)

    if stdin_data is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(stdin_data)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    timed_out = cancelled = False
    deadline = started + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(0.0, min(remaining, 0.05)))
                break
            except subprocess.TimeoutExpired:
                pass
            hand_over()
            if cancel is not None and cancel.is_set():
                cancelled = True
            elif time.monotonic() >= deadline:
                timed_out = True
            else:
                continue
            terminate_group(pgid, grace, reap=proc.poll)
            proc.wait()
            break
    finally:
        # Whatever the program left in its group (a daemonised grandchild) goes too.
        kill_group(pgid, signal.SIGKILL)
        LIVE_GROUPS.discard(pgid)
        if proc.returncode is None:
            # Left early (an on_line callback raised): reap the killed program, or it
            # stays a zombie in its group until the interpreter happens to collect it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    # Grandchildren may hold the pipe open; they are dead now, so EOF follows.
    for reader in readers:
        reader.join(timeout=2.0)
    hand_over()
    proc.stdout.close()
    if proc.stderr is not None:
        proc.stderr.close()
    return Completed(
        argv=tuple(argv),
        returncode=proc.returncode,
        output=capture.text(),
        timed_out=timed_out,
        cancelled=cancelled,
        duration=time.monotonic() - started,
        dropped_bytes=capture.dropped + err_capture.dropped,
        stderr=err_capture.text() if split_stderr else "",
    )


#: Set in the environment of every job (and so of whatever it starts) to the host's
#: state directory: a host started on that directory again finds the programs a
#: predecessor's jobs left running, wherever they reparented and whatever session they
#: made.  (A job process forked from the fork server does not show it in
#: ``/proc/PID/environ``, which holds the environment a process was exec'd with: those
#: are found through :class:`GroupBook`.)
MARK = "OPSAGENT_STATE_DIR"
#: The job a marked process belongs to (process isolation), for the log.
MARK_JOB = "OPSAGENT_JOB_ID"


def _environ(pid: int) -> dict[bytes, bytes] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return None
    out: dict[bytes, bytes] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key] = value
    return out


def marked(state_dir: str) -> dict[int, str]:
    """Processes other than this one whose environment carries ``MARK=state_dir``:
    pid -> the job id they belong to ("" when not known)."""
    want = os.fsencode(state_dir)
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        env = _environ(int(entry.name))
        if env is not None and env.get(MARK.encode()) == want:
            found[int(entry.name)] = os.fsdecode(env.get(MARK_JOB.encode(), b""))
    return found


def kill_marked(state_dir: str, *, wait: float = 5.0) -> dict[int, str]:
    """SIGKILL what :func:`marked` finds and wait up to ``wait`` seconds for it to go;
    return what was killed (pid -> job id)."""
    found = marked(state_dir)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(_running(pid) for pid in found):
        time.sleep(0.02)
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its (new) parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), to tell it from a later process
    that reuses its number; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


class GroupBook:
    """The job process groups running now, one file each in ``directory`` (pid, start
    time, job id), so that a host started after this one was killed can kill them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, pid: int, job_id: str) -> None:
        (self.directory / str(pid)).write_text(f"{start_time(pid) or 0} {job_id}\n")

    def remove(self, pid: int) -> None:
        (self.directory / str(pid)).unlink(missing_ok=True)

    def kill_left(self) -> dict[int, str]:
        """SIGKILL the groups recorded by a predecessor that still run; forget them all."""
        killed: dict[int, str] = {}
        for path in self.directory.iterdir():
            try:
                pid = int(path.name)
                started, _, job_id = path.read_text().strip().partition(" ")
            except (ValueError, OSError):
                path.unlink(missing_ok=True)
                continue
            if start_time(pid) == int(started or 0) and _running(pid):
                if not kill_group(pid, signal.SIGKILL):  # not yet its own group leader
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                killed[pid] = job_id
            path.unlink(missing_ok=True)
        return killed
