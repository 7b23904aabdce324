"""Control capabilities get a small typed control interface, not the host: who answers
(instance, pid) and the one thing they may ask (a shutdown)."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest
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
