"""Workers: per capability, a bounded queue and a bounded number of jobs running at once.

``process`` isolation runs each job in ``python -m opsagent.isolation.child`` in its own session
(the same code path as ``opsagent do``), with an allow-listed environment plus the
declared credentials, its address space capped (``memory_limit``, else ``[host]
job_memory_limit_mb``), output captured up to a cap, and the whole process group killed
at the time limit (TERM, grace, KILL).  ``thread`` isolation calls the doer in a worker
thread: a thread cannot be killed, so at the limit the host ends the job with
``timeout``, discards whatever the doer returns later, and starts a replacement worker
so the capability keeps its concurrency.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from opsagent.capability import Capability
from opsagent.host.ledger import Ledger, Ticket
from opsagent.isolation import execute, forking, proc
from opsagent.isolation.jobs import JobFactory, timed_out
from opsagent.job import Notes
from opsagent.outcome import Outcome

Finish = Callable[[Ticket, Outcome], None]


class Lane:
    """The queue and worker threads of one capability."""

    def __init__(
        self,
        cap: Capability,
        run: Callable[[Ticket], Outcome | None],
        finish: Finish,
        ledger: Ledger,
    ) -> None:
        self.cap = cap
        self.queue: queue.Queue[Ticket | None] = queue.Queue(maxsize=cap.queue_limit)
        self._run = run
        self._finish = finish
        self._ledger = ledger
        self._threads: set[threading.Thread] = set()
        self._retired: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.stopping = False
        for _ in range(cap.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._loop, name=f"worker-{self.cap.msg_type}", daemon=True)
        with self._lock:
            self._threads.add(t)
        t.start()

    def retire_current_of(self, ticket: Ticket) -> None:
        """A thread job overran its limit: its thread leaves after it returns; replace it."""
        with self._lock:
            for t in self._threads:
                if getattr(t, "ticket", None) is ticket and t not in self._retired:
                    self._retired.add(t)
                    break
            else:
                return
        self._spawn()

    @property
    def stuck_max(self) -> int:
        """Threads of overrun jobs this lane keeps before it takes no more work."""
        return max(4, 2 * self.cap.concurrency)

    def stuck(self) -> str | None:
        """Why the capability takes no new work: too many of its jobs overran their limit
        and still hold threads that cannot be killed.  None while below the bound; the
        threads leave, and the capability is available again, as their doers return."""
        with self._lock:
            n = len(self._retired)
        if n < self.stuck_max:
            return None
        return (
            f"{n} of its jobs overran their time limit and still run in threads that "
            f"cannot be killed (thread isolation); it takes no new work until they return "
            f"(restart the host to end them)"
        )

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            ticket = self.queue.get()
            if ticket is None:
                return
            if self.stopping or ticket.cancel.is_set():
                # Handed back: not acknowledged, so the broker redelivers it.
                self._ledger.release(ticket)
                continue
            me.ticket = ticket  # type: ignore[attr-defined]
            self._ledger.started(ticket)
            log = logger.bind(
                job_id=ticket.job_id, msg_type=self.cap.msg_type, capability=self.cap.distribution
            )
            log.info(
                "job {} started ({} attempt {}{})",
                ticket.job_id,
                self.cap.msg_type,
                ticket.attempt,
                ", may have been interrupted" if ticket.interrupted else "",
            )
            try:
                outcome = self._run(ticket)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                log.opt(exception=True).error("worker failed running {}", ticket.job_id)
                outcome = Outcome.error(f"host failed to run the job: {type(exc).__name__}: {exc}")
            me.ticket = None  # type: ignore[attr-defined]
            if outcome is None:
                log.info("job {} handed back for redelivery", ticket.job_id)
                self._ledger.release(ticket)
            else:
                self._finish(ticket, outcome)
            with self._lock:
                if me in self._retired:
                    self._retired.discard(me)
                    self._threads.discard(me)
                    return

    def stop(self) -> None:
        self.stopping = True
        with self._lock:
            n = len(self._threads)
        for _ in range(n):
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                # Make room: queued tickets are handed back anyway.
                try:
                    dropped = self.queue.get_nowait()
                    if dropped is not None:
                        self._ledger.release(dropped)
                except queue.Empty:
                    pass
                self.queue.put_nowait(None)


class Workers:
    """All lanes, and the two ways of running a job."""

    def __init__(
        self,
        jobs: JobFactory,
        *,
        finish: Finish,
        ledger: Ledger,
        state_dir: Path,
        journal: Notes,
        journal_path: Path | None,
        grace: float,
        output_cap: int,
        fork_server: bool = True,
        before_start: Callable[[Ticket], None] = lambda ticket: None,
        memory_limit: int = 0,
    ) -> None:
        #: Makes each job (config, credentials, environment, time limit).
        self.jobs = jobs
        caps = jobs.capabilities
        #: Called before each job starts (the host: make the journal hold what it must).
        self.before_start = before_start
        self.ledger = ledger
        self.state_dir = state_dir
        #: Thread jobs' durable notes (process jobs open the journal at ``journal_path``).
        self.journal = journal
        self.journal_path = journal_path
        self.grace = grace
        self.output_cap = output_cap
        #: MiB of address space of a process job whose capability sets none (0: no limit).
        self.memory_limit = memory_limit
        self._finish = finish
        self.fork_server = fork_server
        if fork_server:
            process_caps = [c for c in caps.values() if c.isolation == "process" and not c.control]
            env = {k: os.environ[k] for k in jobs.env_allow if k in os.environ}
            forking.start(sorted({c.entry_point for c in process_caps if c.entry_point}), env)
        self.results_dir = state_dir / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        #: The job process groups running now (see :func:`opsagent.host.daemon.reap_leftovers`).
        self.groups = proc.GroupBook(state_dir / "running")
        self.lanes = {
            m: Lane(cap, self._run, finish, ledger) for m, cap in caps.items() if not cap.control
        }
        #: Runs a chain's job (``Capability.steps``) in the host: set by the host, which
        #: has what its steps need (:class:`opsagent.host.chains.ChainRunner`).
        self.chains: Callable[[Ticket], Outcome | None] | None = None

    def submit(self, ticket: Ticket) -> bool:
        """Queue ``ticket``; False when the capability's queue is full."""
        try:
            self.lanes[ticket.cap.msg_type].queue.put_nowait(ticket)
            return True
        except queue.Full:
            return False

    def stuck(self) -> dict[str, str]:
        """Capabilities that take no new work because of overrun thread jobs, with why."""
        out = {}
        for msg_type, lane in self.lanes.items():
            reason = lane.stuck()
            if reason is not None:
                out[msg_type] = reason
        return out

    def _run(self, ticket: Ticket) -> Outcome | None:
        try:
            self.before_start(ticket)
        except sqlite3.Error as exc:
            # The journal could not record what must precede the job (it logged why).
            return Outcome.error(
                f"not run: the host's journal cannot be written ({exc}); send it again "
                f"once the host's state directory has room"
            )
        if ticket.cap.steps:
            if self.chains is None:
                return Outcome.error("this host runs no chains (no chain runner)")
            return self.chains(ticket)
        if ticket.cap.isolation == "thread":
            return self._run_thread(ticket)
        return self._run_process(ticket)

    def memory_limit_of(self, cap: Capability) -> int:
        """MiB of address space of ``cap``'s process jobs (0: no limit)."""
        return self.memory_limit if cap.memory_limit is None else cap.memory_limit

    def _run_thread(self, ticket: Ticket) -> Outcome | None:
        job = self.jobs.job(
            ticket.cap.msg_type,
            ticket.job_id,
            attempt=ticket.attempt,
            interrupted=ticket.interrupted,
            notes=self.journal,
            time_limit=ticket.cap.time_limit_for(ticket.inp),
        )
        return execute.call(ticket.cap, ticket.inp, job)

    def _run_process(self, ticket: Ticket) -> Outcome | None:
        cap = ticket.cap
        result = self.results_dir / f"{os.getpid()}-{threading.get_ident()}.json"
        result.unlink(missing_ok=True)
        spec = self.jobs.spec(
            cap.msg_type,
            ticket.job_id,
            ticket.inp,
            result=result,
            journal=self.journal_path,
            attempt=ticket.attempt,
            interrupted=ticket.interrupted,
            memory_limit=self.memory_limit_of(cap),
        )
        env = self.jobs.process_env(cap.msg_type, ticket.job_id)
        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            self.groups.add(pid, ticket.job_id)

        try:
            done = self._spawn_job(spec, env, cap, ticket, started)
        finally:
            for pid in pids:
                self.groups.remove(pid)
        return process_outcome(done, cap, ticket.job_id, result, cap.time_limit_for(ticket.inp))

    def _spawn_job(
        self,
        spec: dict[str, Any],
        env: dict[str, str],
        cap: Capability,
        ticket: Ticket,
        started: Callable[[int], None],
    ) -> proc.Completed:
        if self.fork_server:
            done = forking.run_job(
                spec,
                env=env,
                workdir=self.results_dir,
                timeout=cap.time_limit_for(ticket.inp) + cap.backstop,
                grace=self.grace,
                output_cap=self.output_cap,
                cancel=ticket.cancel,
                on_start=started,
            )
        else:
            done = proc.run(
                [sys.executable, "-m", "opsagent.isolation.child"],
                env=env,
                cwd=str(self.state_dir),
                timeout=cap.time_limit_for(ticket.inp) + cap.backstop,
                grace=self.grace,
                output_cap=self.output_cap,
                stdin_data=json.dumps(spec).encode(),
                cancel=ticket.cancel,
                on_start=started,
            )
        return done

    def check_deadlines(self) -> None:
        """End thread jobs that overran their limit (process jobs are killed by proc.run)."""
        now = time.monotonic()
        for ticket in self.ledger.snapshot():
            cap = ticket.cap
            if (
                cap.isolation == "thread"
                and not cap.steps  # each step has its own limit; see host.chains
                and ticket.started_at is not None
                and not ticket.ended
                and now - ticket.started_at > cap.time_limit_for(ticket.inp) + cap.backstop
            ):
                self.lanes[cap.msg_type].retire_current_of(ticket)
                self._finish(
                    ticket,
                    Outcome.timeout(
                        timed_out(cap, thread=True, limit=cap.time_limit_for(ticket.inp))
                    ),
                )

    def stop(self) -> None:
        for lane in self.lanes.values():
            lane.stop()


def process_outcome(
    done: proc.Completed, cap: Capability, job_id: str, result: Path, limit: float | None = None
) -> Outcome | None:
    """The outcome of a job process (None: cancelled, to be handed back), from the
    result file it wrote, or from how it ended; the result file is removed."""
    log = logger.bind(job_id=job_id, msg_type=cap.msg_type)
    if done.output.strip():
        log.debug("output of {}:\n{}", job_id, done.output)
    try:
        if done.cancelled:
            return None
        if done.timed_out:
            return Outcome.timeout(timed_out(cap, thread=False, limit=limit))
        try:
            return Outcome.from_json(json.loads(result.read_text()))
        except (OSError, ValueError, KeyError):
            how = (
                f"was killed by signal {-done.returncode}"
                if done.returncode < 0
                else f"exited with status {done.returncode}"
            )
            if done.returncode == -signal.SIGKILL:
                # Not the host's kill (that is a timeout or a cancel, above).
                how += (
                    " (SIGKILL: the kernel's OOM killer when the service reached its "
                    "MemoryMax=, or a person)"
                )
            tail = done.tail(500)
            return Outcome.error(
                f"{cap.msg_type} job process {how} without an outcome"
                + (f": {tail}" if tail else "")
            )
    finally:
        result.unlink(missing_ok=True)
