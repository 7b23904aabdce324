"""The old agent's periodic loops as schedules (docs/operations.md, "The old agent's
periodic loops"): the documented snippet loaded as it is, its slots (wall-clock grid
with an offset, or counted from the start after an initial delay), the ``EPICPROD_*``
variables that tune and disable it, and -- on a host on the real broker -- the
snapper's rule that a periodic capture is reported only when it captured or failed."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from opsagent.host import config as configuration
from opsagent.host import schedule
from opsagent.testing import FakeServer, Response
from opsagent_epicprod import capabilities as epicprod_capabilities

ROOT = Path(__file__).resolve().parents[2]
STUB = str(ROOT / "tests" / "programs" / "stubdoer.py")
LOOP_VARS = ("EPICPROD_SYSTEM_STATUS_INTERVAL", "EPICPROD_SYSTEM_STATUS_INITIAL_DELAY",
             "EPICPROD_SNAPPER_OPPORTUNITY_SECONDS", "EPICPROD_SNAPPER_POLL_SECONDS",
             "EPICPROD_SNAPPER_INITIAL_DELAY")


def snippet() -> str:
    page = (ROOT / "docs" / "operations.md").read_text()
    match = re.search(r"<!-- epicprod schedules -->\n```toml\n(.*?)```", page, re.S)
    assert match, "the epicprod schedules snippet is gone from docs/operations.md"
    return match.group(1)


@pytest.fixture
def loops(tmp_path, monkeypatch):
    for name in LOOP_VARS:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "opsagent.toml"
    path.write_text(snippet())
    caps = {c.msg_type: c for c in epicprod_capabilities()}
    sent: list[dict] = []
    clock = [1000.3]

    def make() -> schedule.Scheduler:
        return schedule.Scheduler(
            configuration.load(path).schedule, caps, send=sent.append, in_flight=list,
            journal_state=lambda _job: "finished", book=schedule.Book(tmp_path / "j.sqlite3"),
            namespace="prodops", exclusive=False, probe_seconds=5, clock=lambda: clock[0])
    return make, sent, clock


def test_the_loops_run_where_the_old_agent_ran_them(loops):
    make, sent, clock = loops
    scheduler = make()
    assert scheduler.upcoming() == {
        # 30 s after the start, then every 300 s from there.
        "system_status_periodic": pytest.approx(1030.3),
        # 1 s after a half minute of the wall clock, not before 5 s after the start.
        "snapper_periodic": 1021.0,
    }
    for now in (1021.0, 1030.3, 1051.0, 1081.0, 1330.3):
        clock[0] = now
        scheduler.tick()
    ids = [b["request_id"] for b in sent]
    assert ids == ["schedule.snapper_periodic.1021", "schedule.system_status_periodic.1030",
                   "schedule.snapper_periodic.1051", "schedule.snapper_periodic.1081",
                   # A late tick runs an overdue slot once, then the next after now.
                   "schedule.system_status_periodic.1330", "schedule.snapper_periodic.1111"]
    assert scheduler.upcoming()["snapper_periodic"] == 1351.0
    snap = sent[0]
    assert {k: snap[k] for k in ("msg_type", "scope", "manual", "source")} == {
        "msg_type": "capture_system_snap", "scope": "all", "manual": False,
        "source": "ops_agent_periodic"}
    # The periodic refresh holds the manual full refresh's key.
    refresh = scheduler.entries[0]
    assert refresh.dedup_key == "refresh_system_status:all"


def test_the_old_variables_tune_and_turn_off_the_loops(loops, monkeypatch):
    make, _sent, _clock = loops
    monkeypatch.setenv("EPICPROD_SYSTEM_STATUS_INTERVAL", "0")
    monkeypatch.setenv("EPICPROD_SNAPPER_POLL_SECONDS", "10")
    monkeypatch.setenv("EPICPROD_SNAPPER_INITIAL_DELAY", "0")
    scheduler = make()
    assert [e.name for e in scheduler.entries] == ["snapper_periodic"]
    assert scheduler.entries[0].sched.every == 10 and scheduler.upcoming() == {
        "snapper_periodic": 1001.0}
    # The current name wins over the legacy one; 0 turns the snapper off too.
    monkeypatch.setenv("EPICPROD_SNAPPER_OPPORTUNITY_SECONDS", "0")
    assert make().entries == []
    monkeypatch.setenv("EPICPROD_SNAPPER_OPPORTUNITY_SECONDS", "soon")
    with pytest.raises(schedule.ScheduleError,
                       match="EPICPROD_SNAPPER_OPPORTUNITY_SECONDS='soon' is not a number"):
        make()


def test_schedule_options_are_checked():
    with pytest.raises(ValueError, match="offset must be >= 0 and below every"):
        configuration.ScheduleConfig(msg_type="x", every=30, offset=30)
    with pytest.raises(ValueError, match="go with every, not cron"):
        configuration.ScheduleConfig(msg_type="x", cron="* * * * *", offset=1)
    with pytest.raises(ValueError, match="initial_delay must be >= 0"):
        configuration.ScheduleConfig(msg_type="x", every=5, initial_delay=-1)


def snapper_host(host_factory, mon: FakeServer):
    """A host (not started) with only capture_system_snap, the documented schedules with
    a capture every 2 s, the stub doer as the web tier's interpreter, reporting to
    ``mon``; and the stub's folder."""
    host = host_factory(
        paths=(), env={"EPICPROD_SNAPPER_OPPORTUNITY_SECONDS": "2",
                       "EPICPROD_SNAPPER_INITIAL_DELAY": "0",
                       "EPICPROD_SYSTEM_STATUS_INTERVAL": "0"},
        extra={"capabilities": {"allow": ["capture_system_snap"]},
               "monitor": {"enabled": True, "url": mon.url}})
    root = host.tmp / "swf-monitor"
    root.mkdir()
    host.config.write_text(
        host.config.read_text()
        + f'[epicprod]\nmonitor_root = "{root}"\npython = "{STUB}"\n' + snippet())
    return host, root


def monitor_fake() -> FakeServer:
    mon = FakeServer()
    mon.route("POST", "/api/systemagents/heartbeat/", Response.json({}, 201))
    mon.route("POST", "/api/logs/", Response.json({}, 201))
    return mon


@pytest.mark.broker
def test_a_periodic_capture_is_reported_only_when_it_captured_or_failed(host_factory,
                                                                         caller_for):
    mon = monitor_fake()
    with mon.start():
        host, root = snapper_host(host_factory, mon)
        plan = root / "plan.json"

        def answer(stdout: str = "", exit_status: int = 0) -> int:
            plan.write_text(json.dumps({"*": {"stdout": stdout, "exit": exit_status,
                                              "stderr": "ERROR: no snapshot\n"}}))
            calls = root / "calls.jsonl"
            return len(calls.read_text().splitlines()) if calls.exists() else 0

        def runs_after(n: int, more: int) -> None:
            calls = root / "calls.jsonl"
            end = time.monotonic() + 30
            while not (calls.exists() and len(calls.read_text().splitlines()) >= n + more):
                assert time.monotonic() < end, "no periodic capture"
                time.sleep(0.05)

        answer('[{"scope": "all", "outcome": "quiet", "error": null}]\n')
        host.start()
        caller = caller_for(host)
        runs_after(0, 2)
        time.sleep(0.5)  # the second quiet run's end is written
        assert [e for e in caller.events if e.get("msg_type") == "snapper_capture_ready"] == []
        assert mon.requests_to("POST", "/api/logs/") == []
        db = sqlite3.connect(host.tmp / "state" / "journal.sqlite3")
        quiet = db.execute("SELECT id, outcome FROM jobs WHERE state = 'finished'").fetchall()
        db.close()
        assert quiet and all(json.loads(o)["status"] == "ok" for _id, o in quiet)
        # Slots on the grid of 2 s, 1 s after it.
        assert all(int(i.rsplit(".", 1)[1]) % 2 == 1 for i, _o in quiet), quiet

        n = answer('[{"scope": "all", "outcome": "snap", "error": null}]\n')
        runs_after(n, 1)
        end = time.monotonic() + 20
        while not [e for e in caller.events if e.get("captured") is True]:
            assert time.monotonic() < end, "no event for a capture"
            time.sleep(0.05)
        event = [e for e in caller.events if e.get("captured") is True][0]
        assert event["msg_type"] == "snapper_capture_ready" and event["manual"] is False
        assert event["job_id"].startswith("schedule.snapper_periodic.")

        answer("", exit_status=1)
        end = time.monotonic() + 20
        while not [e for e in caller.events if e.get("ok") is False]:
            assert time.monotonic() < end, "no event for a failed capture"
            time.sleep(0.05)
        failed = [e for e in caller.events if e.get("ok") is False][0]
        assert failed["error"] == "ERROR: no snapshot"
        end = time.monotonic() + 10
        while len(mon.requests_to("POST", "/api/logs/")) < 2:
            assert time.monotonic() < end, "no action records"
            time.sleep(0.05)
        actions = [r.json()["extra_data"] for r in mon.requests_to("POST", "/api/logs/")]
        assert {a["action"] for a in actions} == {"snapper_capture"}
        assert sorted(a["outcome"] for a in actions)[:2] == ["error", "ok"]


def test_a_run_that_fails_while_the_host_stops_is_quiet_where_its_schedule_asks(loops):
    from opsagent import Outcome

    make, _sent, _clock = loops
    scheduler = make()
    stopping = [False]
    scheduler.stopping = lambda: stopping[0]
    failed = Outcome.error("ERROR: no snapshot")
    snap, status = "schedule.snapper_periodic.1021", "schedule.system_status_periodic.1030"
    assert not scheduler.quiet(snap, failed)
    stopping[0] = True
    assert scheduler.quiet(snap, failed)
    assert not scheduler.quiet(status, failed)  # its schedule does not ask for it
    assert not scheduler.quiet("req-1", failed)  # a request is always answered
    assert not scheduler.quiet(snap, Outcome.ok(captured=True))


@pytest.mark.broker
def test_a_capture_failing_as_the_host_stops_leaves_no_event_and_no_record(host_factory,
                                                                             caller_for):
    mon = monitor_fake()
    with mon.start():
        host, root = snapper_host(host_factory, mon)
        # Every capture fails after 1.5 s (its database went away).
        (root / "plan.json").write_text(json.dumps({"*": {
            "sleep": 1.5, "exit": 1, "stderr": "ERROR: the database went away\n"}}))
        calls = root / "calls.jsonl"
        host.start()
        caller = caller_for(host)
        end = time.monotonic() + 30
        # The first failure, while the host runs, is reported as ever.
        while not [e for e in caller.events if e.get("ok") is False]:
            assert time.monotonic() < end, "no event for a failed capture"
            time.sleep(0.05)
        # The next capture starts; the host is told to stop while it runs.
        while len(calls.read_text().splitlines()) < 2:
            assert time.monotonic() < end, "no second capture"
            time.sleep(0.02)
        host.stop()
        assert host.proc.returncode == 0
        time.sleep(0.5)  # anything the stopping host published has reached the caller
        records = [r.json()["extra_data"] for r in mon.requests_to("POST", "/api/logs/")]
    db = sqlite3.connect(host.tmp / "state" / "journal.sqlite3")
    ended = db.execute("SELECT id, outcome FROM jobs WHERE state = 'finished' "
                       "ORDER BY id").fetchall()
    db.close()
    # Both failures are in the journal; only the first went out.
    assert [json.loads(o)["status"] for _id, o in ended] == ["error", "error"], ended
    failures = [e for e in caller.events if e.get("msg_type") == "snapper_capture_ready"]
    assert [e["job_id"] for e in failures] == [ended[0][0]]
    assert [(r["action"], r["outcome"], r["job_id"]) for r in records
            if r["action"] == "snapper_capture"] == [("snapper_capture", "error", ended[0][0])]
