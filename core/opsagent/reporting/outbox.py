"""The notifications' outbox: every message waiting to be posted, on disk.

A SQLite database (WAL) in the state directory, ``notifications.sqlite3``, mode 0600 in
the 0700 directory (a message may name what a job did; the webhook URLs are not here).
A message is written when its job ends, before the observer returns, and marked when
its webhook has accepted it; so a host killed while a webhook is down finds its
messages here when it starts again and posts them then.

Each message has a key, unique in the outbox: ``<rule>/<job id>`` for a job's message
(a job is told about once per rule, whatever happens to the host), ``<rule>/digest/<t>``
for a digest.  The key travels with the message (Mattermost: ``props.opsagent_id``; a
JSON webhook: ``id`` and the ``Idempotency-Key`` header) so a receiver can drop a
repeat: delivery is at least once -- a host killed after the webhook accepted a message
and before the outbox marked it posts it again after its restart.

Durability is the job journal's group commit's (``synchronous=NORMAL``): a write
survives the host being killed, not necessarily a power loss.  States: ``pending``
(to post), ``suppressed`` (over the rule's rate limit, waiting for its digest),
``sent``, ``digested``, ``failed`` (refused for good: a bad payload), ``expired`` (not
posted in time).  Settled messages are forgotten after a week.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import attrs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,           -- job | digest
    state      TEXT NOT NULL,           -- see the module's docstring
    body       TEXT NOT NULL,           -- the JSON posted, scrubbed
    summary    TEXT NOT NULL,           -- "<msg_type> <outcome>", for a digest
    created    REAL NOT NULL,
    next_at    REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at    REAL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(state, next_at);
CREATE INDEX IF NOT EXISTS messages_rule ON messages(rule, created);
"""

#: States of a message that is settled (kept a week, then forgotten).
SETTLED = ("sent", "digested", "failed", "expired")
#: Settled messages older than this are forgotten.
KEEP_SECONDS = 7 * 86400.0


@attrs.frozen
class Message:
    id: int
    key: str
    rule: str
    kind: str
    body: str
    created: float
    next_at: float
    attempts: int


class Outbox:
    """Thread-safe: one connection, one lock, short transactions (no network inside)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created 0600 before SQLite opens it, whatever the umask; SQLite gives its
        # -wal and -shm files the database's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self.prune()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self,
        key: str,
        rule: str,
        body: str,
        *,
        summary: str = "",
        kind: str = "job",
        state: str = "pending",
        created: float | None = None,
    ) -> bool:
        """Keep one message; False when its key is already here (told before)."""
        now = time.time() if created is None else created
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO messages (key, rule, kind, state, body, summary,"
                " created, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, rule, kind, state, body, summary, now, now),
            )
        return cur.rowcount == 1

    def due(self, now: float, limit: int = 100, held: Collection[str] = ()) -> list[Message]:
        """Pending messages whose time has come, oldest first, none of a ``held`` rule."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, key, rule, kind, body, created, next_at, attempts FROM messages"
                " WHERE state = 'pending' AND next_at <= ?"
                " AND rule NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
                (now, json.dumps(sorted(held)), limit),
            ).fetchall()
        return [Message(*row) for row in rows]

    def due_now(self) -> int:
        """Make every pending message due now; return how many there are."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE messages SET next_at = ? WHERE state = 'pending'", (time.time(),)
            )
        return cur.rowcount

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_at) FROM messages WHERE state = 'pending'"
            ).fetchone()
        return row[0]

    def sent(self, message_id: int) -> None:
        self._settle(message_id, "sent", None)

    def settle(self, message_id: int, state: str, error: str) -> None:
        self._settle(message_id, state, error)

    def _settle(self, message_id: int, state: str, error: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE messages SET state = ?, done_at = ?, attempts = attempts + 1,"
                " last_error = coalesce(?, last_error) WHERE id = ?",
                (state, time.time(), error, message_id),
            )

    def retry(self, message_id: int, next_at: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE messages SET next_at = ?, attempts = attempts + 1, last_error = ?"
                " WHERE id = ?",
                (next_at, error, message_id),
            )

    def hold_rule(self, rule: str, until: float) -> None:
        """Nothing of ``rule`` is due before ``until`` (its webhook asked us to wait)."""
        with self._lock:
            self._db.execute(
                "UPDATE messages SET next_at = ? WHERE rule = ? AND state = 'pending'"
                " AND next_at < ?",
                (until, rule, until),
            )

    def told_since(self, rule: str, since: float) -> int:
        """Job messages of ``rule`` let through (not suppressed) since ``since``."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE rule = ? AND kind = 'job' AND created >= ?"
                " AND state NOT IN ('suppressed', 'digested')",
                (rule, since),
            ).fetchone()
        return int(row[0])

    def suppressed(self) -> dict[str, float]:
        """Rules with messages waiting for a digest, and the oldest one's time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rule, MIN(created) FROM messages WHERE state = 'suppressed' GROUP BY rule"
            ).fetchall()
        return {rule: created for rule, created in rows}

    def digest(self, rule: str, before: float, make: Any) -> int:
        """Replace ``rule``'s suppressed messages older than ``before`` by one pending
        digest ``make(summaries, first, last) -> (key, body)``, in one transaction;
        return how many it covers."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT id, summary, created, key FROM messages WHERE rule = ?"
                    " AND state = 'suppressed' AND created < ? ORDER BY id",
                    (rule, before),
                ).fetchall()
                if rows:
                    key, body = make(
                        [(r[1], r[3]) for r in rows], rows[0][2], max(r[2] for r in rows)
                    )
                    now = time.time()
                    self._db.execute(
                        "INSERT OR IGNORE INTO messages (key, rule, kind, state, body, summary,"
                        " created, next_at) VALUES (?, ?, 'digest', 'pending', ?, '', ?, ?)",
                        (key, rule, body, now, now),
                    )
                    self._db.executemany(
                        "UPDATE messages SET state = 'digested', done_at = ? WHERE id = ?",
                        [(now, r[0]) for r in rows],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def expire_suppressed(self, rule: str, error: str) -> int:
        """Settle ``rule``'s messages waiting for a digest as ``expired`` (a rule removed
        from the configuration)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE messages SET state = 'expired', done_at = ?, last_error = ?"
                " WHERE rule = ? AND state = 'suppressed'",
                (time.time(), error, rule),
            )
        return cur.rowcount

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM messages GROUP BY state"
            ).fetchall()
        return {state: n for state, n in rows}

    def messages(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every message (or those in ``state``), oldest first: for tests and inspection."""
        query = "SELECT key, rule, kind, state, body, attempts, last_error FROM messages"
        args: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        names = ("key", "rule", "kind", "state", "body", "attempts", "last_error")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def prune(self, older_than: float = KEEP_SECONDS) -> int:
        cutoff = time.time() - older_than
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM messages WHERE state IN (?, ?, ?, ?) AND done_at < ?",
                (*SETTLED, cutoff),
            )
        return cur.rowcount
