"""Schedules against the real broker: a scheduled run is an ordinary request."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from typing import Any

import pytest
from opsagent.host import config as configuration
from opsagent.host import schedule
from support import OPSAGENT, HostProcess, fill, tmpfs

REQUESTED = re.compile(r"schedule (\S+): requested \S+ as schedule\.\S+\.(\d+)( \(catch-up)?")


def scheduled(host: HostProcess, *entries: dict[str, Any]) -> HostProcess:
    """Append ``[[schedule]]`` tables to the host's configuration."""
    text = host.config.read_text()
    for entry in entries:
        text += "\n[[schedule]]\n"
        for key, value in entry.items():
            if isinstance(value, dict):
                value = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
            else:
                value = json.dumps(value)
            text += f"{key} = {value}\n"
    host.config.write_text(text)
    return host


def requested(text: str, name: str) -> list[tuple[int, bool]]:
    return [(int(m[2]), bool(m[3])) for m in REQUESTED.finditer(text) if m[1] == name]


def schedule_status(host: HostProcess) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [*OPSAGENT, "--config", str(host.config), "schedule", "--json"],
        capture_output=True, text=True, env=host.env, check=True, timeout=30,
    )
    return {row["name"]: row for row in json.loads(out.stdout)}


def wait_until(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} within {timeout} s")


def test_runs_on_aligned_slots_as_ordinary_requests(host_factory, caller_for):
    host = scheduled(host_factory(), {"name": "echo", "msg_type": "test_echo", "every": 2,
                                      "input": {"text": "tick"}})
    host.start()
    caller = caller_for(host)
    arrived: dict[str, float] = {}

    def three() -> bool:
        with caller.cond:
            for e in caller.events:
                rid = str(e.get("job_id", ""))
                if rid.startswith("schedule.echo.") and rid not in arrived:
                    arrived[rid] = time.time()
                    assert e["msg_type"] == "test_echoed" and e["text"] == "tick"
        return len(arrived) >= 3

    wait_until(three, 12, "three scheduled runs")
    for rid, at in arrived.items():
        slot = int(rid.rsplit(".", 1)[1])
        assert slot % 2 == 0, rid
        # Never early; late only by the time a loaded machine takes (within the period).
        assert 0 <= at - slot < 1.9, (rid, at - slot)
    status = schedule_status(host)["echo"]
    assert status["runs"] >= 3 and status["last_outcome"] == "ok"
    assert status["when"] == "every 2 s"
    assert status["next_run"] > status["last_run"]
    # One line per run, not per tick of the main loop.
    assert host.text().count("schedule echo:") == status["runs"]


def test_a_run_whose_previous_run_is_still_going_is_skipped_and_counted(host_factory,
                                                                          caller_for):
    host = scheduled(host_factory(), {"name": "slow", "msg_type": "test_sleep", "every": 1,
                                      "input": {"seconds": 1.5, "key": "slow"}})
    host.start()
    caller = caller_for(host)
    host.wait_log("is still going", timeout=10)
    wait_until(lambda: len(requested(host.text(), "slow")) >= 2, 10, "two runs")
    status = schedule_status(host)["slow"]
    assert status["skipped"] >= 1
    assert "is still going" in status["last_skip"]
    # Skipped, not queued behind the run and not rejected by the dispatcher.
    assert not [e for e in caller.events if e.get("msg_type") == "request_rejected"]
    slots = [s for s, _ in requested(host.text(), "slow")]
    assert all(b - a >= 2 for a, b in zip(slots, slots[1:], strict=False)), slots


def test_a_manual_request_with_the_same_key_is_never_run_at_once(host_factory, caller_for):
    host = scheduled(host_factory(), {"name": "nightly", "msg_type": "test_sleep", "every": 1,
                                      "input": {"seconds": 0.1, "key": "k"}})
    host.start()
    caller = caller_for(host)
    # Whichever holds the key first, the other does not run: a manual request that meets
    # a scheduled run in flight is refused as a duplicate, so send until one runs.
    for _ in range(10):
        manual = caller.send("test_sleep", {"seconds": 1.2, "key": "k"})
        event = caller.wait_event(manual)
        if event["msg_type"] != "request_rejected":
            break
        assert event["code"] == "duplicate" and "schedule.nightly." in event["reason"]
    # It ran (under a heavily loaded machine it may overrun its 2 s limit: no matter here).
    assert event["outcome"] in ("ok", "timeout"), event
    # The schedule skipped its slots while the manual job held the key...
    host.wait_log(f"job {manual} with the same key (test_sleep:k) is in flight", timeout=5)
    lines = host.text().splitlines()
    began = next(i for i, line in enumerate(lines) if f"job {manual} started" in line)
    ended = next(i for i, line in enumerate(lines) if f"job {manual} ended" in line)
    assert not [line for line in lines[began:ended] if "job schedule.nightly." in line
                and " started " in line]
    # ...and runs again once it is over.
    host.wait_log("schedule nightly: requested", count=len(requested(host.text(), "nightly")) + 1,
                  timeout=5)


def test_no_run_starts_while_the_host_drains(host_factory, caller_for):
    host = scheduled(host_factory(), {"name": "e", "msg_type": "test_echo", "every": 1})
    host.start()
    caller = caller_for(host)
    wait_until(lambda: requested(host.text(), "e"), 5, "a first run")
    running = caller.send("test_sleep", {"seconds": 1.8, "key": "drain"})
    host.wait_log(f"job {running} started", timeout=10)
    host.signal(signal.SIGTERM)
    assert host.wait() == 0
    text = host.text()
    drained = text[text.index("stopping (SIGTERM)"):]
    assert "draining 1 job(s)" in drained
    assert requested(drained, "e") == []


def test_a_restart_runs_one_catch_up_not_a_burst(host_factory):
    host = scheduled(host_factory(), {"name": "e", "msg_type": "test_echo", "every": 1})
    host.start()
    wait_until(lambda: len(requested(host.text(), "e")) >= 2, 6, "two runs")
    assert host.stop() == 0
    before = requested(host.text(), "e")
    time.sleep(4)
    host.start(wait=False)
    host.wait_log("subscribed to", count=2, timeout=20)
    wait_until(lambda: len(requested(host.text(), "e")) >= len(before) + 3, 8, "runs again")
    after = requested(host.text(), "e")[len(before):]
    catch_ups = [slot for slot, catch_up in after if catch_up]
    # One run for the three or more missed slots: the latest, first; then the schedule.
    assert catch_ups == [after[0][0]]
    assert catch_ups[0] >= before[-1][0] + 3
    slots = [slot for slot, _ in after]
    assert slots == sorted(set(slots))
    assert slots[1] - slots[0] <= 2


def test_no_catch_up_when_it_is_turned_off(host_factory):
    host = scheduled(host_factory(), {"name": "e", "msg_type": "test_echo", "every": 1,
                                      "catch_up": False})
    host.start()
    wait_until(lambda: requested(host.text(), "e"), 5, "a run")
    host.stop()
    time.sleep(2.5)
    restarted = time.time()
    host.start(wait=False)
    host.wait_log("subscribed to", count=2, timeout=20)
    wait_until(lambda: len(requested(host.text().split("subscribed to")[-1], "e")) >= 1, 5,
               "a run after the restart")
    after = requested(host.text().split("subscribed to")[-1], "e")
    assert all(slot >= restarted and not catch_up for slot, catch_up in after)


def test_only_the_active_host_of_an_exclusive_queue_schedules(host_factory, caller_for):
    extra = {"broker": {"exclusive": True}, "scheduling": {"probe_seconds": 0.3}}
    entry = {"name": "e", "msg_type": "test_echo", "every": 1}
    active = scheduled(host_factory(name="active", extra=extra), entry).start()
    active.wait_log("scheduling on", timeout=5)
    standby = scheduled(host_factory(name="standby", queue=active.queue, topic=active.topic,
                                     extra=extra), entry).start()
    standby.wait_log("scheduling off", timeout=5)
    time.sleep(3)
    assert requested(standby.text(), "e") == []
    assert len(requested(active.text(), "e")) >= 2
    # The standby takes over when the active host goes.
    assert active.stop() == 0
    standby.wait_log("scheduling on", timeout=10)
    wait_until(lambda: requested(standby.text(), "e"), 5, "the standby's first run")


def test_schedules_are_checked_at_start_up(host_factory):
    bad = scheduled(host_factory(), {"name": "x", "msg_type": "test_sleep", "every": 5,
                                     "input": {"key": "k"}})
    bad.start(wait=False)
    assert bad.wait() == 78
    assert "schedule x: invalid input for test_sleep" in bad.text()
    assert "$.seconds" in bad.text()


@pytest.mark.parametrize("entry, error", [
    ({"msg_type": "a"}, "set exactly one of every or cron"),
    ({"msg_type": "a", "every": 1, "cron": "* * * * *"}, "set exactly one of every or cron"),
    ({"msg_type": "a", "cron": "61 * * * *"}, "not a valid cron expression"),
    ({"msg_type": "a", "every": 1, "jitter": -1}, "jitter must be >= 0"),
])
def test_schedule_config_errors_name_the_entry(tmp_path, entry, error):
    path = tmp_path / "c.toml"
    path.write_text("[[schedule]]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                              for k, v in entry.items()))
    with pytest.raises(configuration.ConfigError, match=error):
        configuration.load(path)


def test_cron_slots_follow_the_expression():
    sched = configuration.ScheduleConfig(msg_type="a", cron="*/15 * * * *")
    start = 1_800_000_000.0  # a multiple of 900 s, so local time zones keep the alignment
    assert schedule.next_slot(sched, start) == start + 900
    assert schedule.last_slot(sched, start + 899) == start
    every = configuration.ScheduleConfig(msg_type="a", every=30)
    assert schedule.next_slot(every, 1000) == 1020
    assert schedule.last_slot(every, 1000) == 990



def test_a_full_state_directory_neither_resends_a_slot_nor_stops_the_schedules(
        host_factory, tmp_path):
    with tmpfs(tmp_path / "h0" / "state", "2m") as state:
        host = scheduled(host_factory(), {"name": "echo", "msg_type": "test_echo", "every": 1,
                                          "input": {"text": "tick"}})
        host.start()
        wait_until(lambda: len(requested(host.text(), "echo")) >= 1, 5, "a first run")
        filler = fill(state)
        time.sleep(3.0)
        text = host.text()
        assert "scheduler tick failed" not in text
        slots = [slot for slot, _ in requested(text, "echo")]
        assert len(slots) == len(set(slots)), f"a slot was sent twice: {slots}"
        assert text.count("runs and skips cannot be recorded") <= 1
        filler.unlink()
        seen = len(requested(host.text(), "echo"))
        wait_until(lambda: len(requested(host.text(), "echo")) >= seen + 2, 6,
                   "runs once there is room again")
        assert host.stop() == 0
