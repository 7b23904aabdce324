"""The journal's group commit: acceptances held in memory until a commit, every finish
committed before it returns, nothing forgotten when a commit fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from opsagent.journal import Journal
from opsagent.outcome import Outcome


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
