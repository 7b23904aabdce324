"""The journal's group commit: acceptances held in memory until a commit, every finish
committed before it returns, nothing forgotten when a commit fails."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
from opsagent.host.journal import Journal, digest
from opsagent.outcome import Outcome
from opsagent.schema import Digits, structure


def other_view(path: Path) -> dict[str, tuple[str, int, int]]:
    """What another connection (a restarted host, a child process) sees."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT id, state, attempts, published FROM jobs").fetchall()
    finally:
        db.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_acceptance_is_seen_here_at_once_and_elsewhere_after_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    entry = j.accept("a", "test_noop", None, {"msg_type": "test_noop"})
    assert (entry.state, entry.attempts) == ("accepted", 1)
    got = j.get("a")
    assert got is not None and got.body == {"msg_type": "test_noop"}
    assert other_view(path) == {}
    j.commit()
    assert other_view(path) == {"a": ("accepted", 1, 0)}


def test_redeliveries_count_attempts_held_and_committed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    assert j.accept("a", "t", None, {}).attempts == 1
    assert j.accept("a", "t", None, {}).attempts == 2  # still held
    j.commit()
    assert j.accept("a", "t", None, {}).attempts == 3  # from the database
    j.commit()
    assert other_view(path)["a"] == ("accepted", 3, 0)
    # A restarted host reads the committed count.
    j.close()
    assert Journal(path).accept("a", "t", None, {}).attempts == 4


def test_finish_commits_held_acceptances_with_the_outcomes(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    for job in ("a", "b", "c"):
        j.accept(job, "t", None, {"n": job})
    j.finish_many([("a", Outcome.ok(x=1), True), ("b", Outcome.error("boom"), False)])
    assert other_view(path) == {
        "a": ("finished", 1, 1),
        "b": ("finished", 1, 0),
        "c": ("accepted", 1, 0),
    }
    finished = j.accept("a", "t", None, {"n": "a"})
    assert finished.state == "finished" and finished.outcome == Outcome.ok(x=1)
    assert finished.attempts == 1


def test_a_failed_commit_holds_the_acceptances_again(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    j.accept("a", "t", None, {})
    j._db.execute("PRAGMA query_only = ON")  # every write now fails, as on a full disk
    with pytest.raises(sqlite3.OperationalError):
        j.finish("a", Outcome.ok())
    with pytest.raises(sqlite3.OperationalError):
        j.commit()
    got = j.get("a")
    assert got is not None and got.state == "accepted"
    j._db.execute("PRAGMA query_only = OFF")
    j.finish("a", Outcome.ok(), published=True)
    assert other_view(path) == {"a": ("finished", 1, 1)}


def test_close_writes_what_is_held(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    j.accept("a", "t", "key", {})
    j.close()
    assert other_view(path) == {"a": ("accepted", 1, 0)}


def test_acceptances_being_committed_stay_visible_and_count_attempts(tmp_path: Path) -> None:
    """A redelivery arriving while its acceptance is being written (another thread holds
    the write lock) is seen as held, and its new attempt count is committed next."""
    import threading

    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    j.accept("a", "t", None, {})
    entered, release = threading.Event(), threading.Event()

    def slow_step() -> None:
        entered.set()
        release.wait(5)

    with j._lock:  # as commit() would
        writer = threading.Thread(target=j._transaction, args=(slow_step,))
        writer.start()
        assert entered.wait(5)
        # Mid-transaction: "a" is neither pending nor committed, yet known.
        assert j.get("a") is not None and j.get("a").attempts == 1
        assert j.accept("a", "t", None, {}).attempts == 2
        release.set()
        writer.join(5)
    assert other_view(path) == {"a": ("accepted", 1, 0)}
    j.commit()
    assert other_view(path) == {"a": ("accepted", 2, 0)}


def test_commit_for_commits_only_a_held_acceptance(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    j.accept("a", "t", None, {})
    j.commit_for("a")
    assert other_view(path) == {"a": ("accepted", 1, 0)}
    j.accept("b", "t", None, {})
    j.commit_for("a")  # already durable: "b" stays held, no transaction
    assert other_view(path) == {"a": ("accepted", 1, 0)}
    j.commit_for("b")
    assert set(other_view(path)) == {"a", "b"}


# -- what a job id stands for: its msg_type and a digest of its input ----------------------

#: The jobs table as hosts wrote it before they kept a digest of each job's input; state
#: directories like this exist in production and must keep working.
OLD_SCHEMA = """
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    msg_type    TEXT NOT NULL,
    dedup_key   TEXT,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    outcome     TEXT,
    published   INTEGER NOT NULL DEFAULT 0,
    accepted_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX jobs_finished ON jobs(state, finished_at);
CREATE TABLE notes (job_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                    PRIMARY KEY (job_id, key));
"""


def old_journal(path: Path, jobs: list[tuple[str, str, dict, str, Outcome | None]]) -> None:
    """A journal file as an older host left it: ``(id, msg_type, body, state, outcome)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("PRAGMA journal_mode=WAL")
    now = time.time()  # recent: a host prunes finished jobs older than its retention
    for job_id, msg_type, body, state, outcome in jobs:
        db.execute(
            "INSERT INTO jobs (id, msg_type, body, state, attempts, outcome, published,"
            " accepted_at, finished_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
            (
                job_id,
                msg_type,
                json.dumps(body),
                state,
                None if outcome is None else json.dumps(outcome.to_json()),
                int(outcome is not None),
                now - 60,
                None if outcome is None else now - 30,
            ),
        )
    db.commit()
    db.close()


@attrs.frozen
class FetchInput:
    scope: str
    pandaid: Digits
    force: bool = False


def test_the_digest_is_of_the_input_not_of_the_routing_fields() -> None:
    body = {"msg_type": "fetch", "scope": "epic", "pandaid": 12}
    same = [
        body,
        {**body, "pandaid": "12"},  # an id as a string or a number: the same input
        {
            **body,
            "reply_to": "/queue/retry.2",
            "request_id": "r1",
            "namespace": "prodops",
            "sender": "web",
            "requested_by": "someone",
        },  # a retry from a new connection
        {"pandaid": 12, "force": False, "scope": "epic", "msg_type": "fetch"},
    ]
    other = [{**body, "pandaid": 13}, {**body, "force": True}, {**body, "scope": "user"}]
    digests = {digest(structure(b, FetchInput)) for b in same}
    assert len(digests) == 1
    assert not digests & {digest(structure(b, FetchInput)) for b in other}


def test_other_work_under_a_jobs_id_is_returned_as_the_job_stands(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    assert j.accept("a", "t", None, {"n": 1}, "d1").digest == "d1"
    # Held in memory: a copy counts an attempt, other work does not and sees the job.
    assert j.accept("a", "t", None, {"n": 1, "reply_to": "/queue/b"}, "d1").attempts == 2
    other = j.accept("a", "t", None, {"n": 2}, "d2")
    assert (other.attempts, other.body, other.digest) == (2, {"n": 1}, "d1")
    assert other.other_than("t", "d2") and not other.other_than("t", "d1")
    assert j.accept("a", "u", None, {}, "d1").other_than("u", "d1"), "another msg_type"
    j.commit()
    assert other_view(path)["a"] == ("accepted", 2, 0)
    # Committed: the same again.
    assert j.accept("a", "t", None, {}, "d1").attempts == 3
    assert j.accept("a", "t", None, {}, "d2").attempts == 3
    j.finish("a", Outcome.ok(), published=True)
    done = j.accept("a", "t", None, {}, "d2")
    assert (done.state, done.digest) == ("finished", "d1") and done.other_than("t", "d2")
    j.close()
    stored = sqlite3.connect(path).execute("SELECT input_digest, attempts FROM jobs").fetchall()
    assert stored == [("d1", 3)]


def test_a_journal_written_before_digests_is_brought_up_to_date_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite3"
    old_journal(
        path,
        [
            ("done", "t", {"msg_type": "t", "n": "1"}, "finished", Outcome.ok(x=1)),
            ("cut", "t", {"msg_type": "t", "n": "2"}, "running", None),
        ],
    )
    # Several processes open it at once (a restarted host and its jobs' children).
    code = f"import pathlib, opsagent.host.journal as j; j.Journal(pathlib.Path({str(path)!r}))"
    opening = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(60) for p in opening] == [0, 0, 0, 0]
    j = Journal(path)
    done = j.accept("done", "t", None, {}, "d1")
    assert (done.state, done.outcome, done.digest) == ("finished", Outcome.ok(x=1), None)
    assert done.body == {"msg_type": "t", "n": "1"}, "the body answers for the digest"
    assert not done.other_than("t", "d1") and done.other_than("u", "d1")
    # An older job that did not finish takes the digest of the request it is asked by.
    cut = j.accept("cut", "t", None, {"msg_type": "t", "n": "2"}, "d2")
    assert (cut.state, cut.attempts) == ("running", 2)
    j.commit()
    rows = dict(sqlite3.connect(path).execute("SELECT id, input_digest FROM jobs").fetchall())
    assert rows == {"done": None, "cut": "d2"}


@pytest.mark.broker
def test_a_host_on_an_older_state_directory_refuses_other_work_under_its_jobs_ids(
    host_factory, caller_for
) -> None:
    host = host_factory()
    body = {
        "msg_type": "test_side_effect",
        "namespace": "prodops",
        "request_id": "legacy-7",
        "reply_to": "/queue/gone",
        "n": "7",
    }
    old_journal(
        host.tmp / "state" / "journal.sqlite3",
        [("legacy-7", "test_side_effect", body, "finished", Outcome.ok(n="7"))],
    )
    host.start()
    caller = caller_for(host)
    caller.send("test_side_effect", {"n": "8"}, request_id="legacy-7")
    caller.send("test_echo", {"text": "x"}, request_id="legacy-7")
    for msg_type, what in (
        ("test_side_effect", "another input"),
        ("test_echo", "another msg_type"),
    ):
        refused = caller.wait_reply(lambda r, m=msg_type: r.get("request") == m)
        assert refused.get("code") == "request_id_reused", refused
        assert f"test_side_effect job with {what}" in refused["reason"]
    # The same request again (another reply_to) is answered from the journal, not run.
    caller.send("test_side_effect", {"n": 7}, request_id="legacy-7")
    answer = caller.wait_reply(lambda r: r.get("job_id") == "legacy-7")
    assert (answer["outcome"], answer["n"]) == ("ok", "7")
    side_effects = host.tmp / "cache" / "side-effects"
    assert not side_effects.exists() or not list(side_effects.iterdir())


# -- durability: the commits that guard side effects are synced to disk -------------------


def commit_levels(j: Journal, step) -> list[tuple[str, str]]:
    """``(statement, synchronous level in force)`` of each commit ``step()`` makes on the
    journal's write connection (a note is one statement, committed on its own)."""
    level = j._db.execute("PRAGMA synchronous").fetchone()[0]
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    current = [names[level]]
    seen: list[tuple[str, str]] = []

    def trace(sql: str) -> None:
        if sql.startswith("PRAGMA synchronous="):
            current[0] = sql.split("=", 1)[1]
        elif sql.startswith(("COMMIT", "INSERT INTO notes")):
            seen.append((sql.split()[0], current[0]))

    j._db.set_trace_callback(trace)
    try:
        step()
    finally:
        j._db.set_trace_callback(None)
    return seen


def test_notes_and_starts_are_synced_to_disk_and_group_commits_are_not(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    assert commit_levels(j, lambda: (j.accept("a", "t", None, {}), j.commit())) == [
        ("COMMIT", "NORMAL")
    ]
    j.accept("b", "t", None, {})
    # The start of a job that may not run twice, with the acceptance held: one commit.
    assert commit_levels(j, lambda: j.start("b")) == [("COMMIT", "FULL")]
    # What a job did outside (a submitted task's id), kept at once.
    assert commit_levels(j, lambda: j.put_note("b", "jeditaskid", "4242")) == [("INSERT", "FULL")]
    assert commit_levels(j, lambda: j.finish("b", Outcome.ok())) == [("COMMIT", "NORMAL")]
    assert j.get_note("b", "jeditaskid") == "4242"
    # A child process's journal (notes from a process job) is opened the same way.
    child = Journal(j.path)
    assert commit_levels(child, lambda: child.put_note("c", "k", "v")) == [("INSERT", "FULL")]


def test_a_journal_refuses_a_level_sqlite_does_not_have(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="guarded: expected one of"):
        Journal(tmp_path / "j.sqlite3", guarded="full; DROP TABLE jobs")
