"""panda_task_operation's doer with the real panda-client against the fake PanDA server:
what PanDA receives, what the monitor is told and in which order, and the outcome."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opsagent import testing
from opsagent.testing import FakeMonitor, FakePanda, Response, processes_with_env
from panda_ops_support import (
    MARK,
    MONITOR_TOKEN,
    OPERATION,
    TASK,
    make_job,
    table,
    token_file_bytes,
)

OP_ID = "3f1c2a9e-0d4b-4c1e-9a57-6b1f0c2d7e11"


def body(**over: Any) -> dict[str, Any]:
    """What the web tier publishes (LEGACY.md: How the web tier publishes)."""
    return {
        "operation": "pause",
        "task_name": TASK,
        "jedi_task_id": 41000,
        "operation_id": OP_ID,
        "created_by": "alice",
        **over,
    }


def run_op(
    tmp_path: Path,
    token: Path | None,
    monitor: FakeMonitor,
    panda: FakePanda,
    time_limit: float = 40.0,
    **over: Any,
) -> Any:
    inp = testing.structure(body(**over), OPERATION.input)
    job = make_job(OPERATION, tmp_path, token, table(monitor, panda), time_limit=time_limit)
    return testing.call_doer(OPERATION, inp, job)


def test_pause_is_sent_read_back_and_verified_with_the_monitor_told_in_order(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    out = run_op(tmp_path, operator_token.path, monitor, panda)
    assert out.status == "ok", out
    assert out.data["status"] == "verified" and out.data["observed_status"] == "paused"
    assert out.data["accepted"] is True and "paused" in out.data["summary"]
    (pause,) = panda.requests_to("task/pause")
    assert pause.json() == {"task_id": 41000}
    assert pause.header("Authorization") == f"Bearer {operator_token.id_token}"
    assert pause.header("Origin") == "EIC.production"
    assert panda.requests_to("task/get_status", "GET")[0].arg("task_id") == "41000"
    assert panda.task(41000)["status"] == "paused"
    # The monitor: running, requested, then the outcome -- in this order.
    kinds = [(c.kind, c.body.get("status") or c.body["dedup_key"]) for c in monitor.calls]
    assert kinds == [
        ("state", "running"),
        ("notice", f"panda-task-operation:{OP_ID}:requested"),
        ("state", "verified"),
        ("notice", f"panda-task-operation:{OP_ID}:verified"),
    ]
    final = monitor.calls[2].body
    assert final["observed_status"] == "paused" and final["evidence"]["jedi_task_id"] == 41000
    notice = monitor.calls[1].body
    assert notice["source"] == "swf-panda-operations" and notice["severity"] == "info"
    assert notice["url"] == f"{monitor.url}/panda/task-operations/{OP_ID}/"
    assert all(
        r.header("Authorization") == f"Token {MONITOR_TOKEN}" for r in monitor.server.requests
    )


def test_a_status_that_does_not_change_is_unverified(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    panda.apply_commands = False  # accepted, but the read-back keeps showing "running"
    out = run_op(tmp_path, operator_token.path, monitor, panda)
    assert out.status == "unverified"
    assert out.data["status"] == "unverified" and out.data["accepted"] is True
    assert out.data["observed_status"] == "running"
    assert "still running" in out.reason
    assert len(panda.requests_to("task/get_status", "GET")) >= 2  # polled, not read once
    assert monitor.states(OP_ID) == ["running", "unverified"]
    assert monitor.notices[-1]["severity"] == "warning"


def test_resume_of_a_paused_task_is_verified(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    panda.task(41000)["status"] = "paused"
    out = run_op(tmp_path, operator_token.path, monitor, panda, operation="resume")
    assert (out.status, out.data["status"], out.data["observed_status"]) == (
        "ok",
        "verified",
        "running",
    )


def test_retry_failures_sends_new_parameters_as_json_and_ends_done(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    panda.task(41000)["status"] = "finished"
    out = run_op(
        tmp_path,
        operator_token.path,
        monitor,
        panda,
        operation="retry_failures",
        new_parameters={"ramCount": 4000, "site": "BNL_PanDA_1"},
    )
    assert out.status == "ok" and out.data["status"] == "done", out
    (retry,) = panda.requests_to("task/retry")
    assert retry.json() == {
        "task_id": 41000,
        "new_parameters": {"ramCount": 4000, "site": "BNL_PanDA_1"},
    }
    assert panda.requests_to("task/get_status", "GET") == []  # only pause/resume are read back
    assert monitor.states(OP_ID) == ["running", "accepted"]


def test_increase_attempts_sends_the_increase(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    out = run_op(
        tmp_path,
        operator_token.path,
        monitor,
        panda,
        operation="increase_attempts",
        increase=3,
        jedi_task_id="41000",
    )
    assert out.status == "ok" and out.data["status"] == "done"
    assert panda.requests_to("task/increase_attempts")[0].json() == {
        "task_id": 41000,
        "increase": 3,
    }
    assert panda.task(41000)["attempts"] == 3


def test_an_error_code_from_panda_fails_with_its_message(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    out = run_op(tmp_path, operator_token.path, monitor, panda, operation="retry_failures")
    assert out.status == "error" and out.data["status"] == "failed"
    assert out.data["accepted"] is False
    assert "code 4" in out.reason and "irrelevant for retry" in out.reason
    assert monitor.states(OP_ID) == ["running", "failed"]


def test_an_unknown_task_fails(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    out = run_op(tmp_path, operator_token.path, monitor, panda, jedi_task_id=999)
    assert out.data["status"] == "failed" and "not found" in out.reason


def test_a_transport_error_fails_naming_it(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    panda.failures["task/pause"] = "drop"
    out = run_op(tmp_path, operator_token.path, monitor, panda)
    assert out.data["status"] == "failed" and "could not be reached" in out.reason
    panda.failures["task/pause"] = 503
    out = run_op(tmp_path, operator_token.path, monitor, panda)
    # panda-client drops the HTTP status of a non-JSON answer: its own 255 is all there is.
    assert out.data["status"] == "failed" and "could not be reached" in out.reason
    assert len(panda.requests_to("task/pause")) == 2


def test_a_hung_panda_ends_timeout_at_the_budget_and_leaves_no_process(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    panda.failures["task/pause"] = "hang"
    t0 = time.monotonic()
    out = run_op(tmp_path, operator_token.path, monitor, panda, time_limit=8.0)  # budget 3 s
    took = time.monotonic() - t0
    assert out.status == "timeout" and out.data["status"] == "timeout", out
    assert out.reason == "operation timed out after 3s"
    assert took < 8.0, took
    assert processes_with_env(f"{MARK}={panda.url}") == []
    assert monitor.states(OP_ID) == ["running", "timeout"]


def test_an_expired_token_is_refused_before_panda_is_called(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    stale = tmp_path / "stale" / ".token"
    stale.parent.mkdir()
    stale.write_bytes(token_file_bytes(exp_in=-60)[0])
    out = run_op(tmp_path, stale, monitor, panda)
    assert out.status == "error" and out.data["status"] == "failed"
    assert "expired" in out.reason and "nothing was sent to PanDA" in out.reason
    assert panda.server.requests == []
    assert monitor.states(OP_ID) == ["failed"]


def test_without_an_operation_id_nothing_is_posted_to_the_monitor(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    out = run_op(tmp_path, operator_token.path, monitor, panda, operation_id=None)
    assert out.data["status"] == "verified"
    assert monitor.calls == []


def test_a_hostile_status_answer_is_not_taken_as_a_status(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    # The pause is accepted; the read-back answers a "status" that is no status.
    hostile = {"success": True, "message": "", "data": "paused\n\x1b[2J" + "x" * 500}
    panda.server.route("GET", "/api/v1/task/get_status", Response.json(hostile))
    out = run_op(tmp_path, operator_token.path, monitor, panda)
    assert out.data["status"] == "unverified"
    assert "observed_status" not in out.data
    assert "\x1b" not in out.reason and len(out.reason) < 1000


def test_a_monitor_that_is_down_does_not_change_what_panda_did(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    monitor.server.route(
        "POST", "/api/panda/task-operations/<operation_id>/state/", Response.unavailable()
    )
    monitor.server.route("POST", "/api/capcom/notices/ingest/", Response.unavailable())
    out = run_op(tmp_path, operator_token.path, monitor, panda)
    assert out.status == "ok" and out.data["status"] == "verified"
    assert len(monitor.server.requests) == 4  # each tried once, none resent
    assert panda.task(41000)["status"] == "paused"


def test_panda_client_dies_with_a_job_that_is_sigkilled(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    # panda-client runs in a session of its own (its own limit kills all it started), so
    # a SIGKILL of the job's group misses it: it must die with the job all the same, or
    # it would go on sending commands nobody notes.
    from opsagent import Credential
    from panda_ops_support import wait_until

    panda.failures["task/pause"] = "hang"
    job = testing.start_job_process(
        OPERATION,
        body(),
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        config=table(monitor, panda),
        credentials={
            "panda_oidc_token": Credential("panda_oidc_token", path=operator_token.path),
            "monitor_token": Credential("monitor_token", value=MONITOR_TOKEN),
        },
        time_limit=60,
    )
    wait_until("the pause sent", lambda: panda.requests_to("task/pause"), timeout=30)
    assert processes_with_env(f"{MARK}={panda.url}") != []
    job.kill9()
    wait_until(
        "panda-client gone", lambda: processes_with_env(f"{MARK}={panda.url}") == [], timeout=5
    )
