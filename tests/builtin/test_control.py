"""Control capabilities get a small typed control interface, not the host: who answers
(instance, pid), the one thing they may ask (a shutdown) and what the journal records of
a job (request_status)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import attrs
import pytest
from opsagent import Capability, JobFailed, Outcome, hookimpl
from opsagent.builtin import PingInput, ShutdownInput, ping, shutdown
from opsagent.host.control import Control
from opsagent.host.plugins import declared_by
from opsagent.isolation.execute import call
from opsagent.job import Job


def control_job(config: object, tmp_path: Path) -> Job:
    return Job(id="m-1", msg_type="shutdown", cache_dir=tmp_path, time_limit=1, config=config)


def test_ping_and_shutdown_use_only_the_control_interface(tmp_path) -> None:
    asked: list[str] = []
    control = Control(instance="here", pid=42, request_shutdown=asked.append)
    pong = ping(PingInput(reply_to="/queue/x"), control_job(control, tmp_path))
    assert pong.data == {"agent": "here", "pid": 42} and asked == []
    ack = shutdown(ShutdownInput(reason="maintenance"), control_job(control, tmp_path))
    assert ack.data == {"agent": "here", "pid": 42} and asked == ["maintenance"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        control.instance = "elsewhere"  # type: ignore[misc]


def test_a_control_capability_outside_the_host_fails_saying_so(tmp_path) -> None:
    import opsagent.builtin as builtin

    cap = next(c for c in declared_by(builtin) if c.msg_type == "shutdown")
    outcome = call(cap, ShutdownInput(), control_job({"not": "a host"}, tmp_path))
    assert outcome.status == "error"
    assert "shutdown runs only in the host" in outcome.reason


def test_the_host_hands_its_control_jobs_its_instance_pid_and_shutdown(opsagent_harness) -> None:
    h = opsagent_harness()
    control = h.host.dispatcher.control
    assert isinstance(control, Control)
    assert (control.instance, control.pid) == ("harness", os.getpid())
    pong = h.ping()
    assert (pong["agent"], pong["pid"]) == ("harness", os.getpid())
    h.publish("shutdown", {"reason": "from a test"}, broker_user=h.HOST_USER)
    h._thread.join(30)
    assert (h.exit_status, h.host.stop_reason) == (100, "from a test")


@attrs.frozen
class SayInput:
    text: str


def say(inp: SayInput, job: Job) -> Outcome:
    if inp.text == "fail":
        raise JobFailed("asked to fail")
    return Outcome.ok(said=inp.text)


@hookimpl
def register_capabilities(register) -> None:
    register(Capability(msg_type="status_say", input=SayInput, doer=say,
                        events={"ok": "status_said", "error": "status_say_failed"},
                        echo=lambda inp: {"text": inp.text}, isolation="thread"))


def ask_status(h, job_id: str, broker_user: str | None = None) -> dict:
    got: list[dict] = []
    done = threading.Event()
    dest = f"/queue/harness.status.{uuid.uuid4().hex}"

    def on_reply(body: bytes) -> None:
        got.append(json.loads(body))
        done.set()

    h.broker.subscribe_queue_callback(dest, on_reply)
    h.publish("request_status", {"job_id": job_id}, reply_to=dest,
              broker_user=broker_user or h.CALLER_USER)
    assert done.wait(10), "no answer to request_status"
    return got[0]


def test_request_status_answers_from_the_journal_with_the_event_as_published(opsagent_harness):
    h = opsagent_harness(modules=[sys.modules[__name__]])
    for text in ("hello", "fail"):
        published = h.send("status_say", {"text": text})
        # The end is committed to the journal just after the event is out.
        end = time.monotonic() + 10
        while (answer := ask_status(h, published["job_id"]))["state"] != "finished":
            assert answer["state"] == "accepted" and time.monotonic() < end, answer
            time.sleep(0.01)
        assert answer["msg_type"] == "request_status"
        assert (answer["job_id"], answer["state"]) == (published["job_id"], "finished")
        assert answer["event"] == published
    unknown = ask_status(h, "never-" + uuid.uuid4().hex)
    assert unknown["state"] == "unknown" and "event" not in unknown
    # The host's own records of refused senders are not reachable: no id holds a "/".
    bad = ask_status(h, "forbidden/ID:1")
    assert bad["msg_type"] == "request_rejected" and bad["code"] == "invalid"
    assert bad["errors"] == ["$.job_id: expected a request_id, got 'forbidden/ID:1'"]


def test_request_status_is_refused_to_a_broker_user_allow_users_leaves_out(opsagent_harness):
    h = opsagent_harness(modules=[sys.modules[__name__]],
                         config={"capability.request_status": {"allow_users": ["webtier"]}})
    published = h.send("status_say", {"text": "private"})
    refused = ask_status(h, published["job_id"], broker_user="outsider")
    assert refused["msg_type"] == "request_rejected" and refused["code"] == "forbidden"
    assert ask_status(h, published["job_id"], broker_user="webtier")["state"] == "finished"
