"""The job journal: a SQLite database (WAL) in the state directory.

A job is recorded when it is accepted and again when it finishes, before its message
is acknowledged.  A redelivered message whose job is finished is not run again: its
recorded outcome is published if it was not yet, and the message is acknowledged.

Writes are group-committed: an acceptance is held in memory (and seen by every read
here) until the next commit, which the host makes before a job starts whose acceptance
is still held, with each batch of finished jobs and at least every tenth of a second
from its main loop; a finish is
always committed before the call returns, so before its message is acknowledged.  A
host killed in between forgets at most the last tenth of a second of acceptances of jobs
that had not started: they are redelivered (nothing acknowledged them) and counted from
attempt 1 again, which they are.  A capability that declares ``reconcile`` has its
jobs' starts recorded too (state ``running``).  The write lock is held only while
committing, so a job's child process writing its notes never waits long, and the
receiver's lookups go through a read connection of their own.

Durability (WAL).  The group commits (acceptances, finishes) are made at
``synchronous=NORMAL``: a commit has reached the operating system when it returns, so it
survives the host being killed (SIGKILL, OOM, a crash), but a power loss or a kernel
panic can undo the commits made since the log was last synced to disk; the file stays
consistent (the log's frames are checksummed, a torn tail is dropped).  The commits that
guard side effects are made at ``FULL``, synced to disk before they return, and with them
every commit before: a job's notes (``Job.remember``: what it has done outside, say the
id of a task a server accepted) and the start of a job whose capability declares
``reconcile``.  An acceptance undone by a power loss is delivered again and counted from
attempt 1; a finish undone leaves its job ``running`` (reconciled if asked for again) or
``accepted``.  ``bench/journal_sync.py`` measures what ``FULL`` costs each write.

A job id is the caller's ``request_id`` when it gives one, so each job also keeps its
msg_type and a :func:`digest` of its input: a copy of the same request (a redelivery, a
caller's retry from a new connection) matches them, and a request that reuses the id for
other work does not and is refused by the dispatcher instead of being answered with
another job's outcome.  A journal written before the column existed gets it when it is
opened; its older jobs have no digest and are matched by their stored body.

Doers store durable per-job notes here (``Job.remember``), from the host's threads or
from a child process, which opens the same file.

When a commit fails (a full disk, an I/O error) the acceptances it was writing are held
again, :attr:`Journal.error` says why until a commit succeeds, and the state change is
logged once each way; the host keeps the messages of jobs whose end is not recorded
unacknowledged and retries (see :mod:`opsagent.host.completion`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
from loguru import logger

from opsagent.outcome import Outcome
from opsagent.schema import unstructure

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    msg_type    TEXT NOT NULL,
    dedup_key   TEXT,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL,          -- accepted | running | finished
    attempts    INTEGER NOT NULL,
    outcome     TEXT,
    published   INTEGER NOT NULL DEFAULT 0,
    accepted_at REAL NOT NULL,
    finished_at REAL,
    input_digest TEXT                   -- see digest(); NULL in journals older than it
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
CREATE TABLE IF NOT EXISTS notes (
    job_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
);
"""


def digest(inp: Any) -> str:
    """A digest of a capability's structured input: the fields the capability reads, in
    a canonical form; not the routing fields (``reply_to``, ``request_id``...), which
    a retry of the same request may change."""
    text = json.dumps(unstructure(inp), sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


@attrs.frozen
class Entry:
    """What the journal knows of one job."""

    id: str
    msg_type: str
    state: str
    attempts: int
    outcome: Outcome | None
    published: bool
    body: dict[str, Any]
    #: :func:`digest` of the job's input; ``None`` for a job recorded before it was kept.
    digest: str | None = None

    def other_than(self, msg_type: str, input_digest: str | None) -> bool:
        """True when this job is known to be other work than ``msg_type`` with an input
        of ``input_digest``; a job without a digest is judged by its msg_type alone."""
        if self.msg_type != msg_type:
            return True
        return None not in (self.digest, input_digest) and self.digest != input_digest


#: One acceptance held in memory: (msg_type, dedup_key, body text, attempts, accepted_at,
#: input digest).
_Held = tuple[str, str | None, str, int, float, str | None]


#: ``PRAGMA synchronous`` levels a journal may be opened with.
SYNC_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _connect(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    # Point lookups by id only: a small page cache keeps the host's memory flat.
    conn.execute("PRAGMA cache_size=-512")
    return conn


class Journal:
    """Thread-safe access to the journal.

    Three locks, so that the receiver accepting a request never waits for a commit: the
    write connection's (held for a whole transaction), the held acceptances' (held only
    to look at or swap two dicts) and a read connection's (WAL: reads see the last
    commit and never wait for a writer).  While a commit writes a batch of acceptances
    they stay visible to reads as ``_committing``.
    """

    def __init__(self, path: Path, *, synchronous: str = "NORMAL", guarded: str = "FULL") -> None:
        """``synchronous``: the ``PRAGMA synchronous`` of the group commits (acceptances,
        finishes); ``guarded``: that of the commits that guard side effects (notes,
        starts).  See the module's docstring; ``bench/journal_sync.py`` measures both."""
        for name, level in (("synchronous", synchronous), ("guarded", guarded)):
            if level not in SYNC_LEVELS:
                raise ValueError(f"{name}: expected one of {SYNC_LEVELS}, got {level!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._sync, self._guarded_sync = synchronous, guarded
        self._lock = threading.Lock()
        self._db = _connect(path, synchronous)
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._migrate()
        self._read_lock = threading.Lock()
        self._reader = _connect(path)
        self._held_lock = threading.Lock()
        #: Acceptances not yet committed, by job id.
        self._pending: dict[str, _Held] = {}
        #: The acceptances the transaction in progress is writing.
        self._committing: dict[str, _Held] = {}
        #: Why the last commit failed; None once one succeeds.
        self.error: str | None = None

    def _migrate(self) -> None:
        """Bring a journal written by an older host up to this schema (the write lock is
        held).  Several processes may open one journal at once (the host and its jobs'
        children): the change is made under SQLite's write lock, after looking again."""
        if "input_digest" in self._columns():
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if "input_digest" not in self._columns():
                self._db.execute("ALTER TABLE jobs ADD COLUMN input_digest TEXT")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _columns(self) -> set[str]:
        return {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}

    def close(self) -> None:
        with self._lock:
            self._commit_pending()
            self._db.close()
        with self._read_lock:
            self._reader.close()

    def commit(self) -> None:
        """Make the acceptances held in memory durable (one transaction)."""
        if not self._pending:
            return
        with self._lock:
            self._commit_pending()

    def commit_for(self, job_id: str) -> None:
        """Make ``job_id``'s acceptance durable if it is still held (with every other
        held one); at once when it already is, as under load it mostly is."""
        with self._held_lock:
            if job_id not in self._pending and job_id not in self._committing:
                return
        with self._lock:
            # A commit in progress held the lock: it may have written this one.
            if job_id in self._pending:
                self._commit_pending()

    def _commit_pending(self) -> None:
        """:meth:`commit` with the lock held."""
        if self._pending:
            self._transaction()

    def _transaction(self, *steps: Callable[[], object]) -> None:
        """Write the held acceptances and run ``steps``, in one transaction (the write
        lock is held); on failure the acceptances it was writing are held again."""
        with self._held_lock:
            batch, self._pending = self._pending, {}
            self._committing = batch
        try:
            self._db.execute("BEGIN")
            try:
                if batch:
                    self._db.executemany(
                        "INSERT INTO jobs (id, msg_type, dedup_key, body, state, attempts,"
                        " accepted_at, input_digest) VALUES (?, ?, ?, ?, 'accepted', ?, ?, ?)"
                        " ON CONFLICT(id) DO UPDATE SET attempts = excluded.attempts,"
                        "   input_digest = coalesce(input_digest, excluded.input_digest)"
                        "   WHERE state != 'finished'",
                        [(job_id, *rest) for job_id, rest in batch.items()],
                    )
                for step in steps:
                    step()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except BaseException as exc:
            with self._held_lock:
                # What was accepted again meanwhile (a newer attempt count) wins.
                self._pending = {**batch, **self._pending}
                self._committing = {}
            if isinstance(exc, sqlite3.Error):
                self._failing(exc)
            raise
        with self._held_lock:
            self._committing = {}
        if self.error is not None:
            self.error = None
            logger.info("the journal {} can be written again", self.path)

    def _failing(self, exc: sqlite3.Error) -> None:
        if self.error is None:
            logger.error(
                "the journal {} cannot be written ({}): messages of jobs whose end is not "
                "recorded stay unacknowledged until it can; free space in the state "
                "directory",
                self.path,
                exc,
            )
        self.error = f"{type(exc).__name__}: {exc}"

    def _held(self, job_id: str) -> _Held | None:
        """The held acceptance of ``job_id`` (the held-acceptances lock is held)."""
        held = self._pending.get(job_id)
        return held if held is not None else self._committing.get(job_id)

    def _hold_again(
        self,
        job_id: str,
        held: _Held,
        msg_type: str,
        input_digest: str | None,
        body: dict[str, Any],
    ) -> Entry:
        """A redelivery of a held acceptance: one more attempt (the held lock is held).
        Other work under its id is not counted: the held entry is returned as it is."""
        entry = Entry(job_id, held[0], "accepted", held[3], None, False, body, held[5])
        if entry.other_than(msg_type, input_digest):
            return attrs.evolve(entry, body=json.loads(held[2]))
        attempts = held[3] + 1
        self._pending[job_id] = (*held[:3], attempts, *held[4:])
        return attrs.evolve(entry, attempts=attempts)

    def accept(
        self,
        job_id: str,
        msg_type: str,
        dedup_key: str | None,
        body: dict[str, Any],
        input_digest: str | None = None,
    ) -> Entry:
        """Record a delivery of ``job_id``; return the entry as it now stands.

        A first delivery creates the job with ``attempts`` 1; a redelivery of a job that
        has not finished counts one more attempt (its state stays ``running`` when it was
        marked started: it may have been interrupted); a finished job is returned
        unchanged, and so is a job that is other work (:meth:`Entry.other_than`) than
        ``msg_type`` with an input of ``input_digest`` (:func:`digest`): the caller
        compares and refuses.
        """
        with self._held_lock:
            held = self._held(job_id)
            if held is not None:
                return self._hold_again(job_id, held, msg_type, input_digest, body)
        entry = self._read(job_id)
        if entry is not None and (
            entry.state == "finished" or entry.other_than(msg_type, input_digest)
        ):
            return entry
        text = json.dumps(body, separators=(",", ":"))
        with self._held_lock:
            held = self._held(job_id)  # accepted by another thread meanwhile
            if held is not None:
                return self._hold_again(job_id, held, msg_type, input_digest, body)
            attempts = 1 if entry is None else entry.attempts + 1
            self._pending[job_id] = (
                msg_type,
                dedup_key,
                text,
                attempts,
                time.time(),
                input_digest,
            )
        state = "running" if entry is not None and entry.state == "running" else "accepted"
        known = input_digest if entry is None or entry.digest is None else entry.digest
        return Entry(job_id, msg_type, state, attempts, None, False, body, known)

    @contextlib.contextmanager
    def _guarding(self) -> Iterator[None]:
        """Commits made in this block (the write lock held) are on disk when they
        return: they guard a side effect (see the module's docstring)."""
        if self._guarded_sync == self._sync:
            yield
            return
        self._db.execute(f"PRAGMA synchronous={self._guarded_sync}")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA synchronous={self._sync}")

    def start(self, job_id: str) -> None:
        """Record durably that ``job_id`` is about to run (with every acceptance held):
        a redelivery after this host dies, or after a power loss, shows it as possibly
        interrupted."""
        with self._lock, self._guarding():
            self._transaction(
                lambda: self._db.execute(
                    "UPDATE jobs SET state = 'running' WHERE id = ? AND state = 'accepted'",
                    (job_id,),
                ),
            )

    def get(self, job_id: str) -> Entry | None:
        with self._held_lock:
            held = self._held(job_id)
        if held is not None:
            msg_type, _key, text, attempts, _at, input_digest = held
            return Entry(
                job_id, msg_type, "accepted", attempts, None, False, json.loads(text), input_digest
            )
        return self._read(job_id)

    def _read(self, job_id: str) -> Entry | None:
        """What the last commit says of ``job_id`` (the read connection)."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT id, msg_type, state, attempts, outcome, published, body, input_digest"
                " FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            return None
        outcome = Outcome.from_json(json.loads(row[4])) if row[4] else None
        return Entry(
            row[0], row[1], row[2], row[3], outcome, bool(row[5]), json.loads(row[6]), row[7]
        )

    def finish(self, job_id: str, outcome: Outcome, *, published: bool = False) -> None:
        """Record the outcome; ``published`` when it has already gone out."""
        self.finish_many([(job_id, outcome, published)])

    def finish_many(self, ends: list[tuple[str, Outcome, bool]]) -> None:
        """Record several outcomes (job id, outcome, published) in one commit, together
        with every acceptance still held."""
        now = time.time()
        rows = [
            (json.dumps(outcome.to_json(), separators=(",", ":")), now, int(published), job_id)
            for job_id, outcome, published in ends
        ]
        with self._lock:
            self._transaction(
                lambda: self._db.executemany(
                    "UPDATE jobs SET state = 'finished', outcome = ?, finished_at = ?,"
                    " published = ? WHERE id = ?",
                    rows,
                ),
            )

    def mark_published(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET published = 1 WHERE id = ?", (job_id,))

    def put_note(self, job_id: str, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` for ``job_id``, on disk when this returns."""
        with self._lock, self._guarding():
            self._db.execute(
                "INSERT INTO notes (job_id, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT(job_id, key) DO UPDATE SET value = excluded.value",
                (job_id, key, value),
            )

    def get_note(self, job_id: str, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM notes WHERE job_id = ? AND key = ?", (job_id, key)
            ).fetchone()
        return row[0] if row else None

    def prune(self, older_than_s: float) -> int:
        """Forget finished jobs older than ``older_than_s`` seconds; return how many."""
        cutoff = time.time() - older_than_s
        with self._lock:
            self._commit_pending()
            cur = self._db.execute(
                "DELETE FROM jobs WHERE state = 'finished' AND finished_at < ?", (cutoff,)
            )
            self._db.execute("DELETE FROM notes WHERE job_id NOT IN (SELECT id FROM jobs)")
            return cur.rowcount

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._commit_pending()
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: n for state, n in rows}
