"""A host SIGKILLed mid-job: what its job left running is killed when a host starts on
the same state directory, and the job is reconciled before it could run a second time."""

from __future__ import annotations

import sqlite3
import subprocess
import time

import pytest
from opsagent.isolation import proc
from support import OPSAGENT

pytestmark = pytest.mark.broker


def _runs(host, n: str) -> list[str]:
    path = host.tmp / "cache" / "side-effects" / f"{n}.runs"
    return path.read_text().splitlines() if path.exists() else []


def _journal(host, job_id: str) -> tuple[str, int]:
    db = sqlite3.connect(host.tmp / "state" / "journal.sqlite3")
    try:
        return db.execute("SELECT state, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        db.close()


def _journal_once_finished(host, job_id: str, timeout: float = 10.0) -> tuple[str, int]:
    """The journal's view once the end is recorded: the completion thread publishes a
    batch's events before it commits their ends (then acknowledges), so a caller can
    hold the event a moment before the record is there."""
    end = time.monotonic() + timeout
    while (got := _journal(host, job_id))[0] != "finished" and time.monotonic() < end:
        time.sleep(0.02)
    return got


def _restart(host) -> None:
    host.start(wait=False)
    host.wait_log("subscribed to", count=2, timeout=20)


def _kill_mid_job(host, caller, payload: dict) -> str:
    rid = caller.send("test_slow_effect", payload, reply=False)
    host.wait_log(f"job {rid} started")
    return rid


def test_a_job_killed_after_its_effect_is_reconciled_not_run_again(host_factory, caller_for):
    host = host_factory().start()
    caller = caller_for(host)
    rid = _kill_mid_job(host, caller, {"n": "1", "after": 30})
    done = host.tmp / "cache" / "side-effects" / "1.done"
    end = time.monotonic() + 10
    while not done.exists() and time.monotonic() < end:
        time.sleep(0.02)
    assert done.exists()
    # Started is durable before the doer runs.
    assert _journal(host, rid) == ("running", 1)
    host.kill9()
    _restart(host)
    event = caller.wait_event(rid, timeout=30)
    assert event["outcome"] == "ok" and event["reconciled"] is True, event
    assert event["n"] == "1"
    assert len(_runs(host, "1")) == 1
    assert "may have been interrupted" in host.text()
    assert _journal_once_finished(host, rid) == ("finished", 2)


def test_a_job_killed_before_its_effect_runs_again_once(host_factory, caller_for):
    host = host_factory().start()
    caller = caller_for(host)
    rid = _kill_mid_job(host, caller, {"n": "2", "before": 30})
    time.sleep(0.3)
    host.kill9()
    _restart(host)
    event = caller.wait_event(rid, timeout=60)
    assert event["outcome"] == "ok" and "reconciled" not in event, event
    # The restarted host killed the first run (it was sleeping before its effect): the
    # second run, attempt 2, is the only one that wrote.
    assert event["attempt"] == 2
    assert _runs(host, "2") == [rid]
    assert f"job {rid} started (test_slow_effect attempt 2, may have been interrupted)" in (
        host.text())


def _alive(pid: int) -> bool:
    return proc.start_time(pid) is not None and proc._running(pid)


def test_processes_a_killed_host_left_running_are_killed_at_restart(host_factory, caller_for):
    host = host_factory().start()
    caller = caller_for(host)
    state = host.tmp / "state"
    rid = _kill_mid_job(host, caller, {"n": "3", "before": 30, "ghost": True})
    first_pid = host.proc.pid
    end = time.monotonic() + 10
    while not proc.marked(str(state.resolve())) and time.monotonic() < end:
        time.sleep(0.02)
    host.kill9()
    # The job process (recorded by its group) and the program it started in a session
    # of its own (found by its environment) outlive the host.
    # The lock still names the killed host: the next one knows to look for leftovers.
    assert (state / "host.lock").read_text().strip() == str(first_pid)
    (job_pid,) = (int(p.name) for p in (state / "running").iterdir())
    ghosts = proc.marked(str(state.resolve()))
    assert list(ghosts.values()) == [rid] and job_pid not in ghosts, ghosts
    assert _alive(job_pid) and all(_alive(pid) for pid in ghosts)
    _restart(host)
    assert not _alive(job_pid) and not any(_alive(pid) for pid in ghosts)
    assert list((state / "running").iterdir()) == []
    assert "killed 2 process(es) left running by a previous host" in host.text()
    assert rid in host.text().split("left running by a previous host")[1].splitlines()[0]
    event = caller.wait_event(rid, timeout=60)
    assert event["outcome"] == "ok"
    # A job of the restarted host that ends leaves neither a record nor a process.
    rid = caller.send("test_slow_effect", {"n": "4"}, reply=False)
    caller.wait_event(rid, timeout=30)
    assert list((state / "running").iterdir()) == []
    assert proc.marked(str(state.resolve())) == {}


def test_a_second_host_on_one_state_directory_is_refused(host_factory):
    host = host_factory().start()
    second = subprocess.run([*OPSAGENT, "--config", str(host.config), "run"], env=host.env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 78, second.stderr
    assert f"another host (pid {host.proc.pid}) is using the state directory" in second.stderr
    assert host.proc.poll() is None
    # A clean stop empties the lock: the next host skips the search for leftovers.
    assert host.stop() == 0
    assert (host.tmp / "state" / "host.lock").read_text() == ""
