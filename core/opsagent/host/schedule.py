"""Schedules: requests the host sends itself, at aligned intervals or by cron.

A due run is published as an ordinary request to the host's own queue, so it takes the
same path as a request from the broker: validation, the capability's dedup key (a
manual request with the same input and a scheduled one never run at once), the
journal, events and the time limit.  Publishing rather than calling the dispatcher
directly is what makes a run at-least-once: the broker holds the request until a host
acknowledges its end, so a host killed mid-run hands it to its restart or to the
standby, and the journal keeps a redelivered finished run from running twice.  Each
run's ``request_id`` is ``schedule.<name>.<slot>`` (the slot's epoch second), so the same
slot published twice is one job.

Clean edges: the main loop ticks the scheduler only while the host is running, never
while it drains.  A run whose previous run (or any job holding the same dedup key) is
still going is skipped and counted, not queued.  After a restart at most one missed slot
is run (``catch_up``), then the schedule continues from the next slot.  With a hot
standby (``broker.exclusive``) a host schedules only while it is the active consumer:
it sends a ``health_ping`` probe through its queue every ``probe_seconds`` and counts
itself active while deliveries reach it -- the broker hands every message, the
standby's probes included, to the active consumer only.

The last slot, job and skip count of each schedule are kept in the journal's database
(table ``schedules``); ``opsagent schedule`` reads them with the last job's outcome.
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
from loguru import logger

from opsagent.capability import Capability
from opsagent.host.config import Config, ScheduleConfig
from opsagent.schema import InputError, structure

#: A published run not yet seen in the journal counts as going for this long (a request
#: refused before acceptance -- unavailable, stopping -- leaves no journal entry).
PENDING_GRACE = 60.0
#: Seconds between two tries to publish a run while the broker connection is down.
RETRY_EVERY = 1.0
#: Where probes' pongs go: a topic nobody needs to read.
PROBE_REPLY_TO = "/topic/opsagent.standby-probe"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    name        TEXT PRIMARY KEY,
    last_slot   REAL NOT NULL,
    last_job_id TEXT NOT NULL,
    last_run_at REAL NOT NULL,
    runs        INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    last_skip   TEXT
);
"""


class ScheduleError(ValueError):
    """A schedule that cannot run: unknown capability, invalid input, duplicate name."""


def with_builtin(cfg: Config, capabilities: Mapping[str, Capability]) -> list[ScheduleConfig]:
    """The configured schedules plus the built-in daily ``prune_cache``.

    The built-in one is left out when a schedule is named ``prune_cache``, when
    ``[scheduling] prune_cache = ""``, or when this host does not offer the capability.
    """
    out = list(cfg.schedule)
    names = {s.label for s in out}
    if cfg.scheduling.prune_cache and "prune_cache" not in names and "prune_cache" in capabilities:
        out.append(ScheduleConfig(msg_type="prune_cache", cron=cfg.scheduling.prune_cache))
    return out


def next_slot(sched: ScheduleConfig, after: float, origin: float | None = None) -> float:
    """The first slot strictly after ``after`` (epoch seconds); ``every`` slots are
    ``origin + k * every`` (default origin: the schedule's ``offset``)."""
    if sched.every is not None:
        base = sched.offset if origin is None else origin
        return base + (math.floor((after - base) / sched.every) + 1) * sched.every
    from croniter import croniter

    start = datetime.fromtimestamp(after).astimezone()
    return float(croniter(sched.cron or "", start).get_next(float))


def last_slot(sched: ScheduleConfig, at: float, origin: float | None = None) -> float:
    """The latest slot at or before ``at``."""
    if sched.every is not None:
        base = sched.offset if origin is None else origin
        return base + math.floor((at - base) / sched.every) * sched.every
    from croniter import croniter

    start = datetime.fromtimestamp(math.floor(at) + 1).astimezone()
    return float(croniter(sched.cron or "", start).get_prev(float))


def _seconds_from(names: list[str], label: str, what: str) -> tuple[float, str] | None:
    """The first of the variables ``names`` that is set, as seconds, and its name."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            return float(raw), name
        except ValueError:
            raise ScheduleError(
                f"schedule {label}: {name}={raw!r} is not a number of seconds ({what})"
            ) from None
    return None


def from_environment(sched: ScheduleConfig) -> ScheduleConfig | None:
    """``sched`` with ``every`` and ``initial_delay`` from its variables when set; None
    when a variable turns it off (0 or less)."""
    changes: dict[str, Any] = {}
    every = _seconds_from(sched.every_env, sched.label, "every")
    if every is not None:
        value, name = every
        if value <= 0:
            logger.info("schedule {}: off ({}={:g})", sched.label, name, value)
            return None
        changes["every"] = value
        if sched.offset >= value:
            changes["offset"] = 0.0
    delay = _seconds_from(sched.initial_delay_env, sched.label, "initial_delay")
    if delay is not None:
        changes["initial_delay"] = max(0.0, delay[0])
    return attrs.evolve(sched, **changes) if changes else sched


def job_id(name: str, slot: float) -> str:
    return f"schedule.{name}.{int(slot)}"


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Book:
    """Each schedule's last run, in the journal's database (its own table and connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        #: Why the last write failed (a full disk); None once one succeeds.
        self.error: str | None = None

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        """Record, or say once that records are being lost: the schedules run on either
        way (a failed record must not make the scheduler send a slot again)."""
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            if self.error is None:
                logger.warning(
                    "schedules: runs and skips cannot be recorded in {} ({}); the schedules "
                    "run on, and `opsagent schedule` shows the last recorded ones",
                    self.path,
                    exc,
                )
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if self.error is not None:
            self.error = None
            logger.info("schedules: runs and skips are recorded again in {}", self.path)

    def last(self, name: str) -> tuple[float, str] | None:
        row = self._db.execute(
            "SELECT last_slot, last_job_id FROM schedules WHERE name = ? AND last_job_id != ''",
            (name,),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def ran(self, name: str, slot: float, job: str) -> None:
        self._write(
            "INSERT INTO schedules (name, last_slot, last_job_id, last_run_at, runs)"
            " VALUES (?, ?, ?, ?, 1) ON CONFLICT(name) DO UPDATE SET"
            " last_slot = excluded.last_slot, last_job_id = excluded.last_job_id,"
            " last_run_at = excluded.last_run_at,"
            " runs = runs + 1",
            (name, slot, job, time.time()),
        )

    def skipped(self, name: str, reason: str) -> None:
        self._write(
            "INSERT INTO schedules (name, last_slot, last_job_id, last_run_at, skipped, last_skip)"
            " VALUES (?, 0, '', 0, 1, ?) ON CONFLICT(name) DO UPDATE SET"
            " skipped = skipped + 1, last_skip = excluded.last_skip",
            (name, reason),
        )

    def close(self) -> None:
        self._db.close()


def status(path: Path) -> dict[str, dict[str, Any]]:
    """What the journal at ``path`` says of each schedule, with its last job's outcome."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            rows = db.execute(
                "SELECT s.name, s.last_slot, s.last_job_id, s.last_run_at, s.runs, s.skipped,"
                " s.last_skip, j.state, j.outcome FROM schedules s"
                " LEFT JOIN jobs j ON j.id = s.last_job_id"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
    finally:
        db.close()
    out: dict[str, dict[str, Any]] = {}
    for name, slot, job, run_at, runs, skipped, last_skip, state, outcome in rows:
        if not job:
            result = None
        elif outcome:
            data = json.loads(outcome)
            result = data.get("status")
            rejected = data.get("data", {}).get("rejected")
            if rejected:
                result = f"rejected ({rejected})"
        else:
            result = "running" if state == "accepted" else "sent"
        out[name] = {
            "last_run": utc(run_at) if job else None,
            "last_slot": utc(slot) if job else None,
            "last_job_id": job or None,
            "last_outcome": result,
            "runs": runs,
            "skipped": skipped,
            "last_skip": last_skip,
        }
    return out


@attrs.define
class Entry:
    """One schedule as the scheduler runs it."""

    sched: ScheduleConfig
    cap: Capability
    body: dict[str, Any]
    dedup_key: str | None
    #: ``every`` slots are ``origin + k * every``: the offset on the wall-clock grid, or
    #: the host's start plus ``initial_delay`` (``grid = false``).
    origin: float = 0.0
    slot: float = 0.0
    fire_at: float = 0.0
    catch_up: bool = False
    last_job: str | None = None
    sent_at: float = 0.0

    @property
    def name(self) -> str:
        return self.sched.label


class Scheduler:
    """Ticked by the host's main loop; publishes due runs through ``send``."""

    def __init__(
        self,
        schedules: list[ScheduleConfig],
        capabilities: Mapping[str, Capability],
        *,
        send: Callable[[dict[str, Any]], None],
        in_flight: Callable[[], list[Any]],
        journal_state: Callable[[str], str | None],
        book: Book,
        namespace: str,
        exclusive: bool,
        probe_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.entries = resolve(schedules, capabilities, namespace)
        self.send = send
        self.in_flight = in_flight
        self.journal_state = journal_state
        self.book = book
        self.namespace = namespace
        self.exclusive = exclusive
        self.probe_seconds = probe_seconds
        self.clock = clock
        #: Whether the host is stopping (set by the host): a schedule's
        #: ``quiet_while_stopping`` keeps a run that fails then quiet.
        self.stopping: Callable[[], bool] = lambda: False
        self._heard = -math.inf
        self._next_probe = 0.0
        self._was_active: bool | None = None
        now = clock()
        for e in self.entries:
            start_at = now + e.sched.initial_delay
            relative = e.sched.every is not None and not e.sched.grid
            e.origin = start_at if relative else e.sched.offset
            # The first slot at or after start_at.
            e.slot = start_at if relative else next_slot(e.sched, start_at - 0.001, e.origin)
            e.fire_at = e.slot + random.uniform(0, e.sched.jitter)  # noqa: S311 - not crypto
            last = book.last(e.name)
            if last is None:
                continue
            e.last_job = last[1]
            if relative:
                continue  # counted from this start: nothing was missed
            missed = last_slot(e.sched, now, e.origin)
            if e.sched.catch_up and missed > last[0]:
                # One run for everything missed while the host was down, never a burst.
                e.slot, e.fire_at, e.catch_up = missed, start_at, True

    # -- standby ---------------------------------------------------------------------

    def heard(self) -> None:
        """A delivery reached this host (the dispatcher's ``on_received``)."""
        self._heard = time.monotonic()

    def active(self) -> bool:
        if not self.exclusive:
            return True
        mono = time.monotonic()
        if mono >= self._next_probe:
            self._next_probe = mono + self.probe_seconds
            try:
                self.send(
                    {
                        "msg_type": "health_ping",
                        "namespace": self.namespace,
                        "reply_to": PROBE_REPLY_TO,
                        "request_id": f"probe.{uuid.uuid4().hex}",
                    }
                )
            except Exception as exc:  # noqa: BLE001 - retried at the next probe
                logger.debug("standby probe not sent: {}", exc)
        active = mono - self._heard < 3 * self.probe_seconds
        if active != self._was_active:
            self._was_active = active
            logger.info(
                "scheduling {}: {}",
                "on" if active else "off",
                "this host is the queue's active consumer"
                if active
                else "no delivery reaches this host (a standby on an exclusive queue)",
            )
        return active

    # -- the tick --------------------------------------------------------------------

    def tick(self, *, accepting: bool = True) -> None:
        if not self.entries:
            return
        if not accepting:
            return
        active = self.active()
        now = self.clock()
        for e in self.entries:
            if now < e.fire_at:
                continue
            if not active:
                self._advance(e, now)
                continue
            reason = self._busy(e, now)
            if reason is not None:
                self.book.skipped(e.name, reason)
                logger.bind(msg_type=e.cap.msg_type).info(
                    "schedule {}: skipped the {} run: {}", e.name, utc(e.slot), reason
                )
                self._advance(e, now)
                continue
            self._run(e, now)

    def _busy(self, e: Entry, now: float) -> str | None:
        tickets = self.in_flight()
        if e.last_job is not None:
            state = self.journal_state(e.last_job)
            if any(t.job_id == e.last_job for t in tickets) or state == "accepted":
                return f"its previous run {e.last_job} is still going"
            if state is None and now - e.sent_at < PENDING_GRACE and e.sent_at:
                return f"its previous run {e.last_job} was sent and has not started yet"
        if e.dedup_key is not None:
            for t in tickets:
                if t.cap.msg_type == e.cap.msg_type and t.dedup_key == e.dedup_key:
                    return f"job {t.job_id} with the same key ({e.dedup_key}) is in flight"
        return None

    def _run(self, e: Entry, now: float) -> None:
        jid = job_id(e.name, e.slot)
        body = {**e.body, "request_id": jid}
        try:
            self.send(body)
        except Exception as exc:  # noqa: BLE001 - the broker is down: try the slot again soon
            if e.fire_at + RETRY_EVERY < next_slot(e.sched, e.slot, e.origin):
                logger.warning("schedule {}: could not send {}: {}; retrying", e.name, jid, exc)
                e.fire_at = now + RETRY_EVERY
            else:
                self.book.skipped(e.name, f"could not send: {exc}")
                logger.warning("schedule {}: could not send {}: {}; skipped", e.name, jid, exc)
                self._advance(e, now)
            return
        self.book.ran(e.name, e.slot, jid)
        logger.bind(msg_type=e.cap.msg_type, job_id=jid).info(
            "schedule {}: requested {} as {}{}",
            e.name,
            e.cap.msg_type,
            jid,
            " (catch-up of missed runs)" if e.catch_up else "",
        )
        e.last_job, e.sent_at = jid, now
        self._advance(e, now)

    def _advance(self, e: Entry, now: float) -> None:
        # From now, not from the slot: a host that was suspended does not fire a burst.
        e.slot = next_slot(e.sched, max(now, e.slot), e.origin)
        e.fire_at = e.slot + random.uniform(0, e.sched.jitter)  # noqa: S311 - not crypto
        e.catch_up = False

    def quiet(self, job_id: str, outcome: Any) -> bool:
        """Whether a scheduled run's end goes out neither as an event nor as an action
        record: its schedule's ``quiet_unless`` (it succeeded and that field of its data is
        not true), or its ``quiet_while_stopping`` (it failed while the host stops: the
        next run is the replacement host's)."""
        if not job_id.startswith("schedule."):
            return False
        name = job_id[len("schedule.") :].rpartition(".")[0]
        for e in self.entries:
            if e.name != name:
                continue
            if outcome.succeeded:
                return bool(e.sched.quiet_unless and not outcome.data.get(e.sched.quiet_unless))
            return bool(e.sched.quiet_while_stopping and self.stopping())
        return False

    def upcoming(self) -> dict[str, float]:
        return {e.name: e.slot for e in self.entries}


def resolve(
    schedules: list[ScheduleConfig], capabilities: Mapping[str, Capability], namespace: str
) -> list[Entry]:
    """Check each schedule against the capabilities; raise :class:`ScheduleError`."""
    out: list[Entry] = []
    seen: set[str] = set()
    for configured in schedules:
        s = from_environment(configured)
        if s is None:
            continue
        if s.label in seen:
            raise ScheduleError(f"schedule {s.label}: two schedules have this name; set name = ...")
        seen.add(s.label)
        cap = capabilities.get(s.msg_type)
        if cap is None or cap.control:
            raise ScheduleError(
                f"schedule {s.label}: no capability {s.msg_type!r} to schedule on this host "
                f"(see `opsagent plugins`)"
            )
        try:
            inp = structure(dict(s.input), cap.input)
        except InputError as exc:
            raise ScheduleError(
                f"schedule {s.label}: invalid input for {s.msg_type}: {exc}"
            ) from None
        body = {**s.input, "msg_type": s.msg_type, "namespace": namespace}
        out.append(Entry(sched=s, cap=cap, body=body, dedup_key=cap.key_of(inp)))
    return out
