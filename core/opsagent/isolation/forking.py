"""Process isolation without paying for interpreter start-up and imports on every job.

A fork server (``multiprocessing``'s ``forkserver``) is started once, with an
allow-listed environment, and imports the host and the plugin modules of every
``process`` capability.  Each job is a fork of it that first makes itself a session
leader (so the host can kill the whole process group at the time limit), points its
standard output and error at a FIFO the host reads with a size cap, replaces its
environment with the job's (allow-list plus declared credentials), and then runs
:func:`opsagent.isolation.child.run_spec` -- the same code path as
``python -m opsagent.isolation.child`` and ``opsagent do``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from opsagent.isolation import proc
from opsagent.isolation.proc import CancelFlag

_CTX = multiprocessing.get_context("forkserver")


#: Imported by the fork server before it forks any job.
CHILD_MODULES = (
    "opsagent.isolation.child",
    "opsagent.isolation.execute",
    "opsagent.isolation.jobs",
    "opsagent.host.plugins",
    "opsagent.host.programs",
    "opsagent.schema",
    "opsagent.host.config",
    "opsagent.host.journal",
    "opsagent.isolation.proc",
    "opsagent.credentials.store",
    "opsagent.private",
    "loguru",
)


def start(preload: Iterable[str], env: Mapping[str, str]) -> None:
    """Start the fork server with ``preload`` imported and only ``env`` in its environment.

    Call while the host is still single-threaded (the environment is swapped briefly).
    """
    _forget_main()
    # What every job imports (opsagent.isolation.child imports some of it lazily, for the
    # stand-alone `python -m opsagent.isolation.child`): imported once here rather than in each job
    # (measured: the job's own imports of execute, schema and config were most of a no-op
    # job's time in the child).
    _CTX.set_forkserver_preload([*CHILD_MODULES, *preload])
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _forget_main() -> None:
    """Keep jobs from running the ``opsagent`` command's module again.

    multiprocessing runs the parent's main module again in every child (as
    ``__mp_main__``) so that what it defines unpickles there; for the host that is the
    ``opsagent`` script or ``python -m opsagent.cli.main``, ~20 ms per job, and a job needs
    nothing from it (its target is in this module).  Other main modules (a test runner,
    an embedding program) are left alone.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    entry = getattr(main, "main", None)
    if main is None or not (
        getattr(spec, "name", None) == "opsagent.cli.main"
        or getattr(entry, "__module__", None) == "opsagent.cli.main"
    ):
        return
    main.__spec__ = None
    if hasattr(main, "__file__"):
        del main.__file__


def _job_main(spec: dict[str, Any], env: dict[str, str], fifo: str) -> None:
    os.setsid()
    try:
        # Non-blocking open: if the host died before we started, there is no reader and
        # we must exit rather than wait forever.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        os._exit(75)
    os.set_blocking(fd, True)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    from opsagent.isolation import child

    child.main_with(spec)


class _Reader:
    """Drains the FIFO into a capped capture until told to stop."""

    def __init__(self, path: Path, cap: int) -> None:
        self.capture = proc._Capture(cap)
        self.rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # Our own writer end keeps the FIFO from reporting EOF before the child opens it.
        self.wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self.stop = threading.Event()
        self.wake_r, self.wake_w = os.pipe()
        self.thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self.thread.start()

    def _drain(self) -> bool:
        try:
            chunk = os.read(self.rfd, 65536)
        except BlockingIOError:
            return False
        if chunk:
            self.capture.feed(chunk)
            return True
        return False

    def _loop(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.rfd, self.wake_r], [], [], 1.0)
            if self.rfd in ready:
                while self._drain():
                    pass
        while self._drain():
            pass

    def close(self) -> str:
        self.stop.set()
        os.write(self.wake_w, b"x")
        self.thread.join(2.0)
        for fd in (self.wfd, self.rfd, self.wake_r, self.wake_w):
            os.close(fd)
        return self.capture.text()


def run_job(
    spec: dict[str, Any],
    *,
    env: Mapping[str, str],
    workdir: Path,
    timeout: float,
    grace: float,
    output_cap: int,
    cancel: CancelFlag,
    on_start: Callable[[int], object] | None = None,
) -> proc.Completed:
    """Run one job spec in a fork of the fork server, like :func:`opsagent.isolation.proc.run`;
    ``on_start`` gets the job process's pid (its group, once it has made its session)."""
    fifo = workdir / f"{spec['job_id'][:40].replace('/', '_')}-{threading.get_ident()}.out"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    reader = _Reader(fifo, output_cap)
    started = time.monotonic()
    p = _CTX.Process(
        target=_job_main, args=(spec, dict(env), str(fifo)), name=f"job-{spec['msg_type']}"
    )
    timed_out = cancelled = False
    exitcode = -9
    try:
        p.start()
        if on_start is not None and p.pid is not None:
            on_start(p.pid)
        deadline = started + timeout
        while True:
            p.join(0.05)
            if p.exitcode is not None:
                break
            if cancel.is_set():
                cancelled = True
            elif time.monotonic() >= deadline:
                timed_out = True
            else:
                continue
            if p.pid is not None and not proc.group_alive(p.pid):
                p.kill()  # not yet a session leader: only itself to kill
            elif p.pid is not None:
                proc.terminate_group(p.pid, grace)
            p.join()
            break
        if p.pid is not None:
            proc.kill_group(p.pid, signal.SIGKILL)  # whatever the job left in its group
        if p.exitcode is not None:
            exitcode = p.exitcode
            p.close()
    finally:
        output = reader.close()
        fifo.unlink(missing_ok=True)
    return proc.Completed(
        argv=(sys.executable, "forkserver", spec["msg_type"]),
        returncode=exitcode,
        output=output,
        timed_out=timed_out,
        cancelled=cancelled,
        duration=time.monotonic() - started,
        dropped_bytes=reader.capture.dropped,
    )
