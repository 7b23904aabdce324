"""submit_evgen_task through a host on the real ActiveMQ: the Submit button's body to the
legacy event; one key space with submit_task; the host SIGKILLed between PanDA's answer
and the record, then restarted: one submission, recorded.

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
from panda_ops_support import wait_until
from test_panda_ops_evgen import OUT_DS, SUBMIT_TASK, spec

pytestmark = pytest.mark.broker

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from support import Caller, HostProcess  # noqa: E402

PRUN = f"prun --exec run.sh --outDS {SUBMIT_TASK} --site BNL_PanDA_1 --vo wlcg --nJobs 1 --noBuild"


@pytest.fixture
def activemq(broker: dict[str, str]) -> dict[str, str]:
    """The run's broker (the root conftest's ``broker``: Classic, then Artemis)."""
    return broker


@pytest.fixture
def panda(operator_token: Any) -> Any:
    with FakePanda(id_tokens=(operator_token.id_token,)) as fake:
        yield fake


@pytest.fixture
def pcs() -> Any:
    with FakeMonitor() as fake:
        fake.add_task(SUBMIT_TASK, PRUN, evgen=spec())
        yield fake


def extra_of(
    tmp_path: Path, token: Path, pcs: FakeMonitor, panda: FakePanda, **over: Any
) -> dict[str, dict[str, Any]]:
    proxy = tmp_path / "x509up_eicprod"
    proxy.write_bytes(b"proxy\n")
    proxy.chmod(0o600)
    dispatcher = tmp_path / "evgen_job_dispatcher.py"
    dispatcher.write_text("print('dispatch')\n")
    return {
        "capabilities": {"allow": ["submit_evgen_task", "submit_task"]},
        "credentials.panda_oidc_token": {"file": str(token)},
        "credentials.evgen_x509_proxy": {"file": str(proxy)},
        "capability.submit_evgen_task": {
            "monitor_url": pcs.url,
            "panda_sys": sys.prefix,
            "dispatcher": str(dispatcher),
            "pcs_timeout": 3,
            "submit_timeout": 30,
            "record_backoff": 0.05,
            **over,
        },
        "capability.submit_evgen_task.panda_env": panda.env(),
        "capability.submit_task": {
            "monitor_url": pcs.url,
            "pcs_timeout": 3,
            "prun_timeout": 30,
            "record_backoff": 0.05,
        },
        "capability.submit_task.panda_env": panda.env(),
    }


BODY = {"task_name": SUBMIT_TASK, "panda_tasks_id": 17, "owner": "alice", "panda_task_name": OUT_DS}


def test_the_submit_buttons_body_becomes_prodtask_submitted(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
) -> None:
    host = HostProcess(
        tmp_path / "run",
        activemq,
        paths=(),
        extra=extra_of(tmp_path, operator_token.path, pcs, panda),
    ).start()
    caller = Caller(activemq, host.queue, host.topic)
    try:
        rid = caller.send("submit_evgen_task", BODY)
        event = caller.wait_event(rid, timeout=40)
    finally:
        caller.close()
        host.stop()
    legacy = {
        "msg_type": "prodtask_submitted",
        "task_name": SUBMIT_TASK,
        "jedi_task_id": "41000",
        "ok": True,
        "namespace": "prodops",
    }
    assert {k: event[k] for k in legacy} == legacy, event
    assert pcs.tasks[SUBMIT_TASK]["panda_task_id"] == 41000
    assert pcs.record_bodies[0]["panda_tasks_id"] == "17"


def test_submit_task_is_refused_while_submit_evgen_task_runs_for_the_same_task(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
) -> None:
    panda.submit_behaviour = "hang"
    host = HostProcess(
        tmp_path / "run",
        activemq,
        paths=(),
        extra=extra_of(tmp_path, operator_token.path, pcs, panda, submit_timeout=4),
    ).start()
    caller = Caller(activemq, host.queue, host.topic)
    try:
        first = caller.send("submit_evgen_task", BODY)
        wait_until("the evgen submission", lambda: panda.submit_requests, timeout=30)
        other = caller.send("submit_task", {"task_name": SUBMIT_TASK, "owner": "alice"})
        refused = caller.wait_reply(lambda r: r.get("request_id") == other, timeout=10)
        failed = caller.wait_event(first, timeout=40)
    finally:
        caller.close()
        host.stop()
    assert refused["msg_type"] == "request_rejected" and refused["code"] == "duplicate"
    assert failed["msg_type"] == "prodtask_submit_failed"
    assert "timed out after 4s" in failed["reason"]
    assert len(panda.submit_requests) == 1  # prun never ran


def test_host_killed_between_pandas_answer_and_the_record_submits_once(
    activemq: dict[str, str],
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
) -> None:
    extra = extra_of(tmp_path, operator_token.path, pcs, panda)
    run = tmp_path / "run"
    first = HostProcess(run, activemq, name="first", extra=extra, paths=()).start()
    caller = Caller(activemq, first.queue, first.topic)
    second = None
    try:
        pcs.record_plan = ["hang"]  # PanDA answered; the record never does...
        rid = caller.send("submit_evgen_task", BODY, reply=False)
        assert pcs.record_seen.wait(40), first.text()[-3000:]
        first.kill9()  # ...and the host dies right then, its job with it
        for pid in processes_with_env(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)
        assert caller.events_for(rid) == [] and pcs.tasks[SUBMIT_TASK]["panda_task_id"] is None
        second = HostProcess(
            run,
            activemq,
            name="second",
            queue=first.queue,
            topic=first.topic,
            extra=extra,
            paths=(),
        ).start()
        event = caller.wait_event(rid, timeout=40)
        time.sleep(1.0)
        assert caller.events_for(rid) == [event]
    finally:
        caller.close()
        if second is not None:
            second.stop()
        first.stop()
    assert event["msg_type"] == "prodtask_submitted" and event["resumed"] is True
    assert event["jedi_task_id"] == "41000"
    assert len(panda.submit_requests) == 1 and len(panda.tasks) == 1
    assert pcs.tasks[SUBMIT_TASK]["panda_task_id"] == 41000
