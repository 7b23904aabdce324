"""The host: wires configuration, plugins, journal, workers and transport, and runs the loop.

The main loop (not a stomp.py callback) keeps the broker connection up, ends thread
jobs that overran, looks at credentials again, keeps systemd informed (``STATUS=``, and
``WATCHDOG=1`` only while the receiver is alive) and watches for a stop.  A stop --
SIGTERM/SIGINT (exit 0) or a ``shutdown`` request (exit 100) -- stops intake, lets
running jobs finish within the drain budget, kills the rest's process groups, and
disconnects: whatever was not finished stays unacknowledged and is redelivered.

Exit statuses (the unit's ``SuccessExitStatus=100`` and ``RestartPreventExitStatus=78
100`` rely on them): 0 clean stop, 100 deliberate ``shutdown``, 78 configuration error or
missing required capability, 75 broker unreachable at start after the configured tries.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

import attrs
from loguru import logger

from opsagent.builtin.credentials import MSG_TYPE as CREDENTIAL_CHECK
from opsagent.builtin.credentials import host_credentials
from opsagent.capability import Capability, DeclarationError
from opsagent.credentials import renewal
from opsagent.credentials import store as creds
from opsagent.credentials.redaction import Redactor
from opsagent.host import chains, observers, plugins, schedule
from opsagent.host import config as configuration
from opsagent.host.access import Access, AccessError
from opsagent.host.completion import Completion
from opsagent.host.control import Control
from opsagent.host.dispatch import Dispatcher
from opsagent.host.journal import Journal
from opsagent.host.ledger import Ledger, Ticket
from opsagent.isolation import jobs, proc
from opsagent.isolation.workers import Workers
from opsagent.outcome import Outcome
from opsagent.reporting import health
from opsagent.reporting.systemd import Notifier
from opsagent.transport.base import Delivery, Transport

EXIT_OK = 0
EXIT_DELIBERATE = 100
EXIT_CONFIG = 78
EXIT_UNREACHABLE = 75

#: Seconds between two STATUS= refreshes (each reads the ledger).
STATUS_EVERY = 1.0
#: A credential closer than this to its expiry is warned about (once).
EXPIRY_WARNING = creds.EXPIRY_WARNING


class StartupError(RuntimeError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: How long a thread may hold the GIL while another waits for it (Python's default is
#: 5 ms): the receiver answering a ping must not wait out a worker's or the main loop's
#: slice.
SWITCH_INTERVAL = 0.001

#: The largest prefetch the host chooses itself (``[broker] prefetch`` may set more).
PREFETCH_CAP = 2000


def private_state_dir(state_dir: Path) -> None:
    """The state directory, 0700 whatever the umask: the journal holds every request's
    input and the jobs' notes, which are nobody else's business (the cache is shared
    with the operator's group; this is not).  A looser one of ours is tightened."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = state_dir.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        logger.warning(
            "state directory {} had mode {:o}; set to 0700", state_dir, st.st_mode & 0o777
        )
        os.chmod(state_dir, 0o700)


def lock_state_dir(state_dir: Path) -> tuple[int, str]:
    """Hold ``host.lock`` in the state directory for the host's life (an ``flock``, which
    the kernel drops when the process dies, however it dies): two hosts on one journal
    would run each other's jobs again and kill each other's processes.

    The file holds the pid of the host holding it, and is emptied by a host that stops
    cleanly: return the lock's descriptor and the pid a predecessor left there ("" after a
    clean stop), which says that it died with its jobs running.
    """
    fd = os.open(state_dir / "host.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartupError(
            f"another host (pid {holder}) is using the state directory {state_dir}; "
            f"give each host its own [host] state_dir",
            EXIT_CONFIG,
        ) from None
    previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, previous


def reap_leftovers(state_dir: Path, predecessor: str) -> None:
    """Kill what jobs of a predecessor on this state directory left running (a host that
    was SIGKILLed or lost its machine's power mid-job, outside systemd's control group):
    before their requests are redelivered here, so a job never runs beside its ghost.
    Called only when the predecessor did not stop cleanly (its pid is still in the lock)."""
    killed = proc.GroupBook(state_dir / "running").kill_left()
    killed.update(proc.kill_marked(str(state_dir.resolve())))
    if killed:
        jobs = sorted({job for job in killed.values() if job})
        logger.warning(
            "killed {} process(es) left running by a previous host (pid {}) on {} (jobs: {})",
            len(killed),
            predecessor,
            state_dir,
            ", ".join(jobs) or "unknown",
        )


#: At most one traceback of a failing main-loop step per this many seconds.
LOOP_FAILURE_LOG_EVERY = 60.0


@attrs.define
class _LoopState:
    """What the main loop carries from one step to the next."""

    deaf_since: float | None = None
    next_status: float = 0.0


_O = TypeVar("_O")


class Host:
    """The daemon: wires the parts of the message path in named steps, then runs the loop."""

    def __init__(
        self,
        cfg: configuration.Config,
        *,
        transport: Transport | None = None,
        registry: plugins.Registry | None = None,
    ) -> None:
        self.cfg = cfg
        self.instance = cfg.host.instance
        self.pid = os.getpid()
        self._stop = threading.Event()
        self.exit_status = EXIT_OK
        self.stop_reason = ""
        self.phase = health.STARTING
        self.notifier = Notifier()
        self.redactor = self._redaction()
        self.registry = self._plugins(registry)
        self.availability = jobs.availability(self.registry.capabilities, cfg)
        self.jobs = self._job_factory()
        caps = self.jobs.capabilities
        self.access = self._access(caps)
        self._expiry_warned: set[tuple[str, float]] = set()
        self.renewers = self._renewers()
        self._check_credentials(initial=True)
        self._require_available()
        self._state_lock = self._state_dir()
        self.journal = Journal(cfg.state_dir / "journal.sqlite3")
        self.journal.prune(7 * 86400)
        self.ledger = Ledger()
        self.transport = self._transport(transport, caps)
        self.completion = Completion(
            self.transport,
            self.journal,
            self.ledger,
            topic=cfg.broker.topic,
            sender=self.instance,
            namespace=cfg.host.namespace,
            max_event=cfg.host.max_event_bytes,
        )
        self._ending: set[str] = set()
        self._ending_lock = threading.Lock()
        self.workers = self._workers()
        self.workers.chains = chains.ChainRunner(
            capabilities=caps,
            journal=self.journal,
            ledger=self.ledger,
            submit=self.workers.submit,
            finish=self.end_job,
            unavailable=self.availability.unavailable,
        ).run
        self.dispatcher = self._dispatcher()
        self.scheduler = self._scheduler(caps, self.journal.path)
        #: Told of each job's end after its outcome is published (metrics, the monitor,
        #: notifications).
        self.observers = observers.configured(
            cfg,
            snapshot=self.snapshot,
            monitor_token=self.monitor_token,
            scrub=self.redactor.scrub,
            notify_urls=self.notify_urls,
        )
        self._delivering = 0
        self.ready = threading.Event()

    def observer(self, kind: type[_O]) -> _O:
        """The observer of type ``kind`` (``Metrics``, ``Monitor``); LookupError if off."""
        for observer in self.observers:
            if isinstance(observer, kind):
                return observer
        raise LookupError(f"no {kind.__name__} observer: it is not enabled in {self.cfg.source}")

    # -- the steps of wiring, in order -------------------------------------------------

    def _renewers(self) -> list[renewal.Renewer]:
        """One thread per ``[renewal.<credential>]``; started with the reporting."""
        try:
            return renewal.renewers(
                self.cfg.renewal, self.cfg.credentials, on_renewed=self._credential_renewed
            )
        except ValueError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from exc

    def _credential_renewed(self, name: str) -> None:
        # On the renewer's thread: the main loop looks at credentials again at once.
        self._next_credential_check = 0.0

    def _redaction(self) -> Redactor:
        """Before anything is logged: every secret the configuration can reach."""
        cfg = self.cfg
        redactor = Redactor(creds.secrets_of(cfg.credentials))
        redactor.learn(cfg.broker.password, cfg.mcp.broker_password)
        self.monitor_token = observers.monitor_token(cfg) if cfg.monitor.enabled else None
        redactor.learn(self.monitor_token)
        self.notify_urls = observers.notify_urls(cfg)
        if cfg.notify:
            from opsagent.reporting.notifications import url_secrets

            for url in self.notify_urls[0].values():
                redactor.learn(*url_secrets(url))
        redactor.install()
        return redactor

    def _plugins(self, registry: plugins.Registry | None) -> plugins.Registry:
        self.notifier.status("loading plugins")
        cfg = self.cfg
        if registry is None:
            try:
                registry = plugins.load(
                    strict=cfg.host.strict,
                    allow=cfg.capabilities.allow,
                    deny=cfg.capabilities.deny,
                    require=cfg.capabilities.require,
                    programs=cfg.program,
                    chains=cfg.chain,
                    source=cfg.source,
                )
            except plugins.PluginError as exc:
                raise StartupError(str(exc), EXIT_CONFIG) from exc
        self._chain_steps(registry)
        for b in registry.broken:
            logger.error(
                "plugin {} ({} {}) is broken and was skipped: {}",
                b.name,
                b.distribution,
                b.version,
                b.error,
            )
        return registry

    def _chain_steps(self, registry: plugins.Registry) -> None:
        """Say at start-up which chain steps this host cannot run."""
        for cap in registry.capabilities.values():
            for step in cap.steps:
                if step.msg_type not in registry.capabilities:
                    logger.error(
                        "chain {}: step {} needs capability {}, which this host does not "
                        "offer; that step will fail",
                        cap.msg_type,
                        step.label,
                        step.msg_type,
                    )

    def _job_factory(self) -> jobs.JobFactory:
        """The one maker of jobs; the registry's capabilities become the declarations
        with this host's overrides."""
        try:
            factory = jobs.JobFactory.from_config(
                self.cfg,
                self.registry.capabilities,
                credentials=self.availability.usable,
                learn=self.redactor.learn,
            )
        except DeclarationError as exc:
            raise StartupError(
                f"{self.cfg.source}: [capability.*] override: {exc}", EXIT_CONFIG
            ) from exc
        except configuration.ConfigError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from exc
        self.registry.capabilities.update(factory.capabilities)
        if CREDENTIAL_CHECK in factory.capabilities:
            # Its jobs see the host's credentials as the host does, and nothing else.
            factory.configs[CREDENTIAL_CHECK] = host_credentials(
                self.cfg.credentials, factory.capabilities
            )
        return factory

    def _access(self, caps: dict[str, Capability]) -> Access:
        try:
            access = Access.from_tables(self.cfg.capability, caps, self.cfg.broker.user)
        except AccessError as exc:
            raise StartupError(f"{self.cfg.source}: {exc}", EXIT_CONFIG) from exc
        anyone = access.open_to_anyone(caps)
        if anyone:
            logger.info("open to any broker user: {}", ", ".join(anyone))
        return access

    def _require_available(self) -> None:
        for m in self.cfg.capabilities.require:
            if m in self.availability.unavailable:
                raise StartupError(
                    f"required capability {m} is unavailable: {self.availability.unavailable[m]}",
                    EXIT_CONFIG,
                )

    def _state_dir(self) -> int:
        """Make and lock the state directory; kill what a predecessor that died left."""
        state_dir = self.cfg.state_dir
        private_state_dir(state_dir)
        lock, predecessor = lock_state_dir(state_dir)
        if predecessor:
            reap_leftovers(state_dir, predecessor)
        return lock

    def _transport(self, transport: Transport | None, caps: dict[str, Capability]) -> Transport:
        queue_total = sum(c.queue_limit + c.concurrency for c in caps.values() if not c.control)
        # Above what the host can hold locally, so the broker never withholds a control
        # message because this consumer has too many unacknowledged deliveries -- up to
        # PREFETCH_CAP: with a larger prefetch a burst fills the socket faster than the
        # receiver reads, the broker blocks writing to it and stops reading the
        # acknowledgements on the same connection, and TCP backs off for seconds
        # (measured: 20,000 queued no-op requests fell to ~88 per second in one run out of
        # three with a prefetch of 200,000; none of six with 2,000).
        self.prefetch = self.cfg.broker.prefetch or min(queue_total + 100, PREFETCH_CAP)
        if transport is None:
            from opsagent.transport.stomp import StompTransport

            transport = StompTransport(
                self.cfg.broker, prefetch=self.prefetch, client_id=self.instance
            )
        return transport

    def _workers(self) -> Workers:
        host = self.cfg.host
        return Workers(
            self.jobs,
            finish=self.end_job,
            ledger=self.ledger,
            state_dir=self.cfg.state_dir,
            journal=self.journal,
            journal_path=self.journal.path,
            grace=host.kill_grace_seconds,
            output_cap=host.output_cap_bytes,
            before_start=self._before_start,
            memory_limit=host.job_memory_limit_mb,
        )

    def _dispatcher(self) -> Dispatcher:
        host = self.cfg.host
        return Dispatcher(
            registry=self.registry,
            transport=self.transport,
            journal=self.journal,
            ledger=self.ledger,
            workers=self.workers,
            completion=self.completion,
            namespace=host.namespace,
            require_namespace=host.require_namespace,
            max_body=host.max_body_bytes,
            control=Control(self.instance, self.pid, self.request_shutdown, status=self.job_status),
            # One mapping, kept current by the credential checks in the main loop.
            unavailable=self.availability.unavailable,
            access=self.access,
            on_control=self.control_ended,
        )

    def _scheduler(self, caps: dict[str, Capability], journal_path: Path) -> schedule.Scheduler:
        """Schedules send requests to this host's own queue (see :mod:`opsagent.host.schedule`)."""
        queue = self.cfg.broker.queue

        def send(body: dict[str, Any]) -> None:
            self.transport.send(queue, json.dumps(body).encode(), {"persistent": "true"})

        try:
            scheduler = schedule.Scheduler(
                schedule.with_builtin(self.cfg, caps),
                caps,
                send=send,
                in_flight=self.ledger.snapshot,
                journal_state=lambda job_id: getattr(self.journal.get(job_id), "state", None),
                book=schedule.Book(journal_path),
                namespace=self.cfg.host.namespace,
                exclusive=self.cfg.broker.exclusive,
                probe_seconds=self.cfg.scheduling.probe_seconds,
            )
        except schedule.ScheduleError as exc:
            raise StartupError(f"{self.cfg.source}: {exc}", EXIT_CONFIG) from exc
        # Deliveries reaching this host tell a standby on an exclusive queue it is active.
        self.dispatcher.on_received = scheduler.heard
        self.completion.quiet_rule = scheduler.quiet
        scheduler.stopping = lambda: self.phase == health.STOPPING
        return scheduler

    @property
    def unavailable(self) -> dict[str, str]:
        """Capabilities that take no requests now, with the reason."""
        return self.availability.unavailable

    def _before_start(self, ticket: Ticket) -> None:
        """What the journal must hold before a job can have effects.

        Its acceptance (held for up to a tenth of a second), so that a redelivery after a
        crash counts attempt 2; and, for a capability that declares ``reconcile``, the
        start itself, so that the redelivery is reconciled before it could run again.
        """
        if ticket.cap.reconcile is not None:
            self.journal.start(ticket.job_id)
        else:
            self.journal.commit_for(ticket.job_id)

    # -- Control (health_ping, shutdown, request_status) ------------------------------

    def job_status(self, job_id: str) -> dict[str, Any]:
        """What the journal records of ``job_id`` (``request_status``): its state and, once
        it finished, the terminal event the host published (rebuilt from the record)."""
        from opsagent.host import events
        from opsagent.schema import InputError, structure

        entry = self.journal.get(job_id)
        if entry is None:
            return {"job_id": job_id, "state": "unknown"}
        out: dict[str, Any] = {
            "job_id": job_id,
            "state": entry.state,
            "request": entry.msg_type,
            "attempts": entry.attempts,
        }
        cap = self.registry.get(entry.msg_type)
        if entry.state != "finished" or entry.outcome is None or cap is None:
            return out
        inp = None
        try:
            inp = structure(entry.body, cap.input)
            echo = cap.echo_of(inp)
        except InputError:
            echo = {}
        # A batch's events, one per item, are a list.
        out["event"] = events.recorded(
            cap,
            self.redactor.outcome(entry.outcome),
            echo,
            job_id=job_id,
            request_id=job_id,
            sender=self.instance,
            namespace=self.cfg.host.namespace,
            inp=inp,
        )
        return out

    def request_shutdown(self, reason: str) -> None:
        logger.warning("shutdown requested: {}", reason)
        self.stop(EXIT_DELIBERATE, reason)

    def stop(self, status: int = EXIT_OK, reason: str = "stop") -> None:
        if not self._stop.is_set():
            self.exit_status = status
            self.stop_reason = reason
            self.dispatcher.accepting = False
            self._stop.set()

    # -- what the host says about itself ---------------------------------------------

    def snapshot(self) -> health.Snapshot:
        in_flight: dict[str, int] = {}
        for ticket in self.ledger.snapshot():
            in_flight[ticket.cap.msg_type] = in_flight.get(ticket.cap.msg_type, 0) + 1
        queued = {m: lane.queue.qsize() for m, lane in self.workers.lanes.items()}
        if self.phase == health.RUNNING:
            state = health.PROCESSING if in_flight else health.READY
        else:
            state = self.phase
        return health.Snapshot(
            state=state,
            broker_connected=self.transport.connected,
            capabilities=tuple(sorted(self.registry.capabilities)),
            unavailable={**self.availability.unavailable, **self.workers.stuck()},
            broken=tuple(b.name for b in self.registry.broken),
            in_flight=in_flight,
            queued=queued,
            credential_expiry=self.availability.expiries(),
            renewal={r.name: r.state.to_json() for r in self.renewers},
            counts=_copy_counts(self.dispatcher.counts),
            journal_error=self.journal.error,
        )

    def on_delivery(self, delivery: Delivery) -> None:
        """The transport's callback: the dispatcher's, counted so that a stop waits for
        the message in hand (a ``shutdown``'s own acknowledgement) to be answered."""
        self._delivering += 1
        try:
            self.dispatcher.on_delivery(delivery)
        finally:
            self._delivering -= 1

    def receiver_alive(self) -> bool:
        """False when the transport says it is connected but its receiver is deaf.

        While the connection is down the main loop itself is reconnecting: a restart
        would not help, and during a long broker outage it would only run the unit into
        its start limit.
        """
        if not self.transport.connected:
            return True
        return bool(getattr(self.transport, "receiving", True))

    # -- the end of a job ------------------------------------------------------------

    def end_job(self, ticket: Ticket, outcome: Outcome) -> None:
        """What workers call when a job ends: scrub, complete, then tell the observers.

        Exactly once per ticket, like :meth:`Completion.finish`, which it wraps: a
        thread job that overran is ended by the main loop and its late return ignored.
        """
        with self._ending_lock:
            if ticket.ended or ticket.job_id in self._ending:
                return
            self._ending.add(ticket.job_id)
        try:
            outcome = self.redactor.outcome(outcome)
            self.completion.finish(ticket, outcome)
        finally:
            with self._ending_lock:
                self._ending.discard(ticket.job_id)
        if ticket.on_end is not None:
            ticket.on_end(outcome)
        if not self.observers or ticket.quiet:
            return
        started = ticket.started_at
        self.tell_observers(
            health.job_end(
                ticket.cap,
                ticket.inp,
                outcome,
                job_id=ticket.job_id,
                duration=0.0 if started is None else time.monotonic() - started,
                echo=ticket.echo,
            )
        )

    def control_ended(
        self, cap: Capability, inp: Any, outcome: Outcome, job_id: str, user: str | None
    ) -> None:
        """A control request was answered: reported like a job when its capability
        declares an action (``shutdown``: ``agent_shutdown``, naming the broker user who
        asked); a ``health_ping`` is not."""
        if not cap.action or not self.observers:
            return
        self.tell_observers(
            health.job_end(
                cap,
                inp,
                self.redactor.outcome(outcome),
                job_id=job_id,
                duration=0.0,
                echo={},
                username=user or "",
                levelname="WARNING",
                timed=False,
            )
        )

    def tell_observers(self, end: health.JobEnd) -> None:
        for observer in self.observers:
            try:
                observer.job_ended(end)
            except Exception:  # noqa: BLE001 - an observer never fails a job
                logger.opt(exception=True).warning("job observer {} failed", observer)

    # -- credentials -----------------------------------------------------------------

    def _check_credentials(self, *, initial: bool = False) -> None:
        now = time.time()
        changed = self.availability.refresh(now)
        for cred in self.availability.found.values():
            try:
                self.redactor.learn(cred.read())
            except OSError:
                pass
            left = None if cred.expires_at is None else cred.expires_at - now
            key = (cred.name, cred.expires_at or 0.0)
            if left is not None and 0 < left < EXPIRY_WARNING and key not in self._expiry_warned:
                self._expiry_warned.add(key)
                logger.warning(
                    "credential {} expires {} (in {:.1f} h); renew it",
                    cred.name,
                    creds.utc(cred.expires_at or 0.0),
                    left / 3600,
                )
        for msg_type, reason in changed.items():
            if reason is not None:
                logger.warning("{} is unavailable: {}", msg_type, reason)
            elif not initial:
                logger.info("{} is available again: its credentials are usable", msg_type)
        if not initial:
            # A job's environment is cached; a credential that appeared or went away
            # changes it.
            for msg_type in self.availability.handed_over_changed:
                self.jobs.forget(msg_type)
        every = self.cfg.host.credential_check_seconds
        upcoming = self.availability.next_expiry(now)
        self._next_credential_check = min(
            now + every, upcoming + 0.05 if upcoming is not None else now + every
        )

    # -- the loop --------------------------------------------------------------------

    def connect(self) -> None:
        """Connect at start-up, or raise :class:`StartupError` (75) after the configured tries."""
        attempts = max(1, self.cfg.broker.connect_attempts)
        hosts = ", ".join(self.cfg.broker.hosts)
        tries = 0
        told = -1
        while not self._stop.is_set():
            if self.transport.ensure(self.on_delivery):
                return
            tries = getattr(self.transport, "failures", tries + 1)
            if tries >= attempts:
                raise StartupError(
                    f"broker {hosts} unreachable after {tries} "
                    f"tries: {getattr(self.transport, 'last_error', '')}",
                    EXIT_UNREACHABLE,
                )
            if tries != told:
                told = tries
                # Each try may wait for the connect timeout and the back-off.
                self.notifier.extend_timeout(self.cfg.broker.reconnect_max_delay + 15)
                self.notifier.status(f"connecting to {hosts}: try {tries + 1} of {attempts}")
            time.sleep(0.1)

    def run(self, *, install_signals: bool = True) -> int:
        """Start, serve until a stop, drain; the exit status (see the module docstring)."""
        if install_signals:
            self._install_signals()
        try:
            self._start()
            self._loop()
            self.drain()
        finally:
            self.completion.stop()
            self._stop_reporting()
        return self.exit_status

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop(EXIT_OK, "SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self.stop(EXIT_OK, "SIGINT"))

    def _start(self) -> None:
        """Observers, the completion thread, the broker; then READY."""
        started = time.monotonic()
        self._start_reporting()
        self.completion.start()
        self.notifier.status(f"connecting to {', '.join(self.cfg.broker.hosts)}")
        self.connect()
        transport = self.transport
        server = getattr(transport, "server", "")
        logger.info(
            "{} subscribed to {} (prefetch {}) on {} in {:.3f} s: capabilities {}; broken {}",
            self.instance,
            self.cfg.broker.queue,
            self.prefetch,
            f"{server} ({getattr(transport, 'kind', None) or 'unknown'})" if server
            else "the broker",
            time.monotonic() - started,
            ", ".join(sorted(self.registry.msg_types)),
            ", ".join(b.name for b in self.registry.broken) or "none",
        )
        # What start-up loaded (plugins and their libraries, ~40,000 objects) lives as
        # long as the host: kept out of the collector's scans, a full collection does
        # not pause the receiver for ~25 ms (measured with the bundled plugins).
        gc.freeze()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.phase = health.RUNNING
        self.ready.set()
        self.notifier.ready(self.snapshot().line())

    def _loop(self) -> None:
        state = _LoopState()
        failed_at = -LOOP_FAILURE_LOG_EVERY
        suppressed = 0
        while not self._stop.wait(0.1):
            try:
                self._loop_step(state)
            except Exception:  # noqa: BLE001 - the host outlives a failing step
                # No WATCHDOG=1 is sent on a failed step: systemd restarts a host whose
                # loop keeps failing; one that fails once carries on.
                now = time.monotonic()
                if now - failed_at < LOOP_FAILURE_LOG_EVERY:
                    suppressed += 1
                    continue
                logger.opt(exception=True).error(
                    "a step of the main loop failed ({} more since the last one logged); "
                    "carrying on",
                    suppressed,
                )
                failed_at, suppressed = now, 0

    def _loop_step(self, state: _LoopState) -> None:
        # Acceptances held since the last batch of ends become durable.
        try:
            self.journal.commit()
        except sqlite3.Error:
            pass  # the journal logs it once and says why in the status line
        # The transport logs each reconnection itself.
        self.transport.ensure(self.on_delivery)
        self.workers.check_deadlines()
        now = time.monotonic()
        alive = self.receiver_alive()
        if not alive and state.deaf_since is None:
            state.deaf_since = now
            logger.error(
                "the broker connection is up but its receiver is dead or has heard nothing "
                "within twice the heart-beat interval; withholding WATCHDOG=1 so systemd "
                "restarts the host"
            )
        elif alive and state.deaf_since is not None:
            logger.info("the receiver hears the broker again")
            state.deaf_since = None
        self.notifier.watchdog(alive, now)
        if now >= state.next_status:
            state.next_status = now + STATUS_EVERY
            self.notifier.status(self.snapshot().line())
        if time.time() >= self._next_credential_check:
            self._check_credentials()
        try:
            self.scheduler.tick(accepting=self.dispatcher.accepting)
        except Exception:  # noqa: BLE001 - a schedule never takes the host down
            logger.opt(exception=True).error("scheduler tick failed")

    def _start_reporting(self) -> None:
        for renewer in self.renewers:
            renewer.start()
        for observer in self.observers:
            try:
                observer.start()
            except observers.ObserverError as exc:
                raise StartupError(str(exc), EXIT_CONFIG) from exc

    def _stop_reporting(self) -> None:
        self.phase = health.EXITED
        for observer in reversed(self.observers):
            observer.stop()
        for renewer in self.renewers:
            renewer.stop()
        self.notifier.close()

    def drain(self) -> None:
        budget = self.cfg.host.drain_seconds
        grace = self.cfg.host.kill_grace_seconds
        self.phase = health.STOPPING
        logger.info(
            "stopping ({}): intake stopped, draining {} job(s) for up to {:g} s",
            self.stop_reason,
            self.ledger.running,
            budget,
        )
        self.dispatcher.accepting = False
        self.transport.stop_intake()
        self.notifier.stopping(
            f"stopping ({self.stop_reason}): draining {self.ledger.running} job(s) for up to "
            f"{budget:g} s",
            budget + grace + 15,
        )
        # Queued jobs that have not started are handed back at once.
        for ticket in self.ledger.snapshot():
            if ticket.started_at is None:
                ticket.cancel.set()
        self.workers.stop()
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and self.ledger.running:
            self.workers.check_deadlines()
            self.notifier.watchdog(True)
            time.sleep(0.05)
        left = self.ledger.snapshot()
        for ticket in left:
            ticket.cancel.set()
        if left:
            self.notifier.extend_timeout(grace + 15)
            self.notifier.status(f"stopping: killing {len(left)} job(s) still running")
        end = time.monotonic() + grace + 2
        while time.monotonic() < end and self.ledger.running:
            self.notifier.watchdog(True)
            time.sleep(0.05)
        if left:
            logger.warning("{} job(s) handed back unacknowledged for redelivery", len(left))
        end = time.monotonic() + 2
        while self._delivering and time.monotonic() < end:
            time.sleep(0.005)
        self.completion.stop()
        self.transport.close()
        self.journal.close()
        self.scheduler.book.close()
        os.ftruncate(self._state_lock, 0)  # a clean stop: nothing left running
        os.close(self._state_lock)
        self.notifier.status(f"stopped with exit status {self.exit_status}")
        logger.info("stopped with exit status {}", self.exit_status)


def _copy_counts(counts: Any) -> dict[str, int]:
    # The receiver thread adds keys while a scrape or a heartbeat reads them.
    for _ in range(5):
        try:
            return dict(counts)
        except RuntimeError:
            continue
    return {}
