"""The web tier's bodies through a host on the real ActiveMQ to the events, with the
real panda-client against the fake PanDA server and the fake monitor recording what
the host tells it.

Needs the broker started by ``scripts/services.sh start activemq`` (``make test`` does).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from opsagent.testing import FakeMonitor, FakePanda, processes_with_env
from panda_ops_support import MARK, MONITOR_TOKEN, TASK, wait_until

pytestmark = pytest.mark.broker

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from support import Caller, HostProcess  # noqa: E402

OP_ID = "3f1c2a9e-0d4b-4c1e-9a57-6b1f0c2d7e11"
BATCH_ID = "9b8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


@pytest.fixture
def activemq(broker: dict[str, str]) -> dict[str, str]:
    """The run's broker (the root conftest's ``broker``: Classic, then Artemis)."""
    return broker


def host_config(
    tmp_path: Path, token: Path, monitor: FakeMonitor, panda: FakePanda, **over: Any
) -> dict[str, dict[str, Any]]:
    secret = tmp_path / "monitor_token"
    secret.write_text(MONITOR_TOKEN + "\n")
    secret.chmod(0o600)
    cfg: dict[str, Any] = {
        "monitor_url": monitor.url,
        "panda_sys": sys.prefix,
        "monitor_timeout": 2.0,
        "verify_seconds": 2.0,
        "verify_every": 0.2,
        **over,
    }
    extra: dict[str, dict[str, Any]] = {
        "capabilities": {"allow": ["panda_task_operation", "panda_task_operations"]},
        "credentials.panda_oidc_token": {"file": str(token)},
        "credentials.monitor_token": {"file": str(secret)},
    }
    for msg_type in ("panda_task_operation", "panda_task_operations"):
        extra[f"capability.{msg_type}"] = dict(cfg)
        extra[f"capability.{msg_type}.panda_env"] = {**panda.env(), MARK: panda.url}
    return extra


def test_the_web_tiers_pause_becomes_the_legacy_event_and_the_monitor_calls(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    monitor: FakeMonitor,
    panda: FakePanda,
) -> None:
    host = HostProcess(
        tmp_path / "run",
        activemq,
        extra=host_config(tmp_path, operator_token.path, monitor, panda),
        paths=(),
    ).start()
    caller = Caller(activemq, host.queue, host.topic)
    try:
        # The fields the task-operation page publishes (LEGACY.md, handler catalogue).
        rid = caller.send(
            "panda_task_operation",
            {
                "operation": "pause",
                "task_name": TASK,
                "jedi_task_id": 41000,
                "operation_id": OP_ID,
                "increase": 1,
                "new_parameters": {},
                "created_by": "alice",
            },
        )
        event = caller.wait_event(rid, timeout=30)
        time.sleep(0.5)
        assert caller.events_for(rid) == [event]
    finally:
        caller.close()
        host.stop()
    legacy = {
        "msg_type": "panda_task_operation_done",
        "operation_id": OP_ID,
        "task_name": TASK,
        "jedi_task_id": "41000",
        "operation": "pause",
        "status": "verified",
        "observed_status": "paused",
        "accepted": True,
        "ok": True,
        "namespace": "prodops",
    }
    assert {k: event[k] for k in legacy} == legacy
    assert "paused" in event["summary"] and "error" not in event
    assert event["sender"] == "host"  # the instance name
    assert [(c.kind, c.body.get("status") or c.body["dedup_key"]) for c in monitor.calls] == [
        ("state", "running"),
        ("notice", f"panda-task-operation:{OP_ID}:requested"),
        ("state", "verified"),
        ("notice", f"panda-task-operation:{OP_ID}:verified"),
    ]


def test_a_bulk_pause_gives_one_event_per_item_with_the_batch_id(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    monitor: FakeMonitor,
    panda: FakePanda,
) -> None:
    panda.task(41001)["status"] = "finished"  # refused: its event says failed
    host = HostProcess(
        tmp_path / "run",
        activemq,
        extra=host_config(tmp_path, operator_token.path, monitor, panda),
        paths=(),
    ).start()
    caller = Caller(activemq, host.queue, host.topic)
    items = [
        {"operation_id": f"op-{i}", "jedi_task_id": str(41000 + i), "task_name": f"t.{41000 + i}"}
        for i in range(3)
    ]
    try:
        rid = caller.send(
            "panda_task_operations",
            {"batch_id": BATCH_ID, "operation": "pause", "items": items, "created_by": "alice"},
        )
        wait_until("three events", lambda: len(caller.events_for(rid)) >= 3, timeout=40)
        time.sleep(0.5)
        events = caller.events_for(rid)
        replies = [r for r in caller.replies if r.get("job_id") == rid]
    finally:
        caller.close()
        host.stop()
    assert len(events) == 3 and len(replies) == 3
    assert [e["operation_id"] for e in events] == ["op-0", "op-1", "op-2"]
    for e, item in zip(events, items, strict=True):
        assert e["msg_type"] == "panda_task_operation_done"
        assert e["batch_id"] == BATCH_ID and e["operation"] == "pause"
        assert e["jedi_task_id"] == item["jedi_task_id"] and e["task_name"] == item["task_name"]
    assert [(e["status"], e["ok"], e["accepted"]) for e in events] == [
        ("verified", True, True),
        ("failed", False, False),
        ("verified", True, True),
    ]
    assert "irrelevant" in events[1]["error"]
    notices = [n["dedup_key"] for n in monitor.notices]
    assert notices == [
        f"panda-task-bulk:{BATCH_ID}:requested",
        f"panda-task-bulk:{BATCH_ID}:completed",
    ]


def test_a_host_stopped_mid_batch_leaves_every_item_exactly_one_event(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    monitor: FakeMonitor,
    panda: FakePanda,
) -> None:
    n = 10  # paced one a second: longer than the host's 5 s drain
    for i in range(3, n):
        panda.add_task(41000 + i, f"t.{41000 + i}")
    extra = host_config(tmp_path, operator_token.path, monitor, panda)
    run = tmp_path / "run"
    first = HostProcess(run, activemq, name="first", extra=extra, paths=()).start()
    caller = Caller(activemq, first.queue, first.topic)
    items = [{"operation_id": f"op-{i}", "jedi_task_id": 41000 + i} for i in range(n)]
    second = None
    try:
        rid = caller.send(
            "panda_task_operations",
            {"batch_id": BATCH_ID, "operation": "pause", "items": items},
            reply=False,
        )
        wait_until("the first command", lambda: panda.requests_to("task/pause"), timeout=30)
        first.signal(signal.SIGTERM)  # drains 5 s, then kills the job and hands it back
        first.wait(30)
        sent_by_first = len(panda.requests_to("task/pause"))
        assert 0 < sent_by_first < n
        assert caller.events_for(rid) == []
        assert processes_with_env(f"{MARK}={panda.url}") == []
        second = HostProcess(
            run,
            activemq,
            name="second",
            queue=first.queue,
            topic=first.topic,
            extra=extra,
            paths=(),
        ).start()
        wait_until("an event per item", lambda: len(caller.events_for(rid)) >= n, timeout=40)
        time.sleep(1.0)  # a second event for any item would have arrived by now
        events = caller.events_for(rid)
    finally:
        caller.close()
        if second is not None:
            second.stop()
        first.stop()
    assert sorted(e["operation_id"] for e in events) == sorted(f"op-{i}" for i in range(n))
    status_of = {e["operation_id"]: e["status"] for e in events}
    statuses = [status_of[f"op-{i}"] for i in range(n)]
    # The first host's answers are kept (noted), the rest were never sent: timeout.  The
    # one command in flight when the job was killed (PanDA got it, its answer was never
    # noted) may end either way, but once.
    assert len(panda.requests_to("task/pause")) == sent_by_first  # nothing sent twice
    assert statuses[sent_by_first:] == ["timeout"] * (n - sent_by_first), statuses
    last = sent_by_first - 1
    assert all(s in ("verified", "unverified") for s in statuses[:last]), statuses
    assert statuses[last] in ("verified", "unverified", "timeout"), statuses
    for i in range(n):
        assert monitor.states(f"op-{i}")[0] == "running"
        assert monitor.states(f"op-{i}")[-1] == statuses[i]


def test_the_same_operation_twice_at_once_is_refused_as_a_duplicate(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    monitor: FakeMonitor,
    panda: FakePanda,
) -> None:
    panda.failures["task/pause"] = "hang"
    # A budget of 4 s and a backstop of 4 s: room for the job process to start under load
    # and to tell the monitor after the budget.
    extra = host_config(tmp_path, operator_token.path, monitor, panda, backstop=4.0, kill_grace=0.5)
    extra["capability.panda_task_operation"]["time_limit"] = 8
    host = HostProcess(tmp_path / "run", activemq, extra=extra, paths=()).start()
    caller = Caller(activemq, host.queue, host.topic)
    body = {"operation": "pause", "task_name": TASK, "jedi_task_id": 41000, "operation_id": OP_ID}
    try:
        first = caller.send("panda_task_operation", body)
        wait_until("PanDA called", lambda: panda.requests_to("task/pause"), timeout=20)
        again = caller.send("panda_task_operation", {**body, "jedi_task_id": "41000"})
        refused = caller.wait_reply(lambda r: r.get("request_id") == again, timeout=10)
        event = caller.wait_event(first, timeout=30)
        gone = processes_with_env(f"{MARK}={panda.url}")
    finally:
        caller.close()
        host.stop()
    assert refused["msg_type"] == "request_rejected" and refused["code"] == "duplicate"
    # The hung PanDA call ends at the operation's budget (8 - 4 s), panda-client with it.
    assert event["status"] == "timeout" and event["error"] == "operation timed out after 4s"
    assert gone == []
    assert len(panda.requests_to("task/pause")) == 1


def test_without_the_token_the_request_is_refused_before_anything(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    monitor: FakeMonitor,
    panda: FakePanda,
) -> None:
    extra = host_config(tmp_path, operator_token.path, monitor, panda)
    extra["credentials.panda_oidc_token"] = {"file": str(tmp_path / "no-such-token")}
    host = HostProcess(tmp_path / "run", activemq, extra=extra, paths=()).start()
    caller = Caller(activemq, host.queue, host.topic)
    try:
        rid = caller.send(
            "panda_task_operation",
            {"operation": "pause", "task_name": TASK, "jedi_task_id": 41000, "operation_id": OP_ID},
        )
        refused = caller.wait_reply(lambda r: r.get("request_id") == rid, timeout=10)
    finally:
        caller.close()
        host.stop()
    assert refused["msg_type"] == "request_rejected" and refused["code"] == "unavailable"
    assert "panda_oidc_token" in refused["reason"]
    assert panda.server.requests == [] and monitor.calls == []
    _ = os


def test_a_job_the_host_kills_at_its_time_limit_still_says_status_timeout(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    monitor: FakeMonitor,
    panda: FakePanda,
) -> None:
    from opsagent.testing import hang

    # The monitor hangs every state POST (2 s each): the job outlives its 4 s limit and the
    # host kills it -- the event is the host's, with LEGACY's fields all the same.
    monitor.server.route("POST", "/api/panda/task-operations/<operation_id>/state/", hang)
    extra = host_config(tmp_path, operator_token.path, monitor, panda, backstop=1.0, kill_grace=0.5)
    extra["capability.panda_task_operation"]["time_limit"] = 4
    host = HostProcess(tmp_path / "run", activemq, extra=extra, paths=()).start()
    caller = Caller(activemq, host.queue, host.topic)
    try:
        rid = caller.send(
            "panda_task_operation",
            {"operation": "pause", "task_name": TASK, "jedi_task_id": 41000, "operation_id": OP_ID},
        )
        event = caller.wait_event(rid, timeout=30)
    finally:
        caller.close()
        host.stop()
    assert event["outcome"] == "timeout" and "time limit of 4 s" in event["reason"]
    assert (event["status"], event["accepted"], event["ok"]) == ("timeout", False, False)
    assert event["operation_id"] == OP_ID and event["jedi_task_id"] == "41000"
