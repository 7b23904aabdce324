"""A broker restart under load: the host reconnects by itself and nothing is lost."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from support import ROOT, Caller, HostProcess, service_env

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def persistent_broker(tmp_path):
    env = {**os.environ, "OPSAGENT_SERVICES": str(tmp_path / "svc"),
           "ACTIVEMQ_PERSISTENT": "true", "ACTIVEMQ_STOMP_PORT": "61623"}
    script = str(ROOT / "scripts" / "services.sh")

    def ctl(cmd: str) -> None:
        subprocess.run([script, cmd, "activemq"], env=env, check=True, capture_output=True)

    ctl("start")
    yield ctl, service_env("activemq", tmp_path / "svc")
    ctl("stop")


def test_broker_restart_under_load(persistent_broker, tmp_path):
    ctl, broker = persistent_broker
    host = HostProcess(tmp_path / "h", broker).start()
    try:
        caller = Caller(broker, host.queue, host.topic)
        first = [caller.send("test_side_effect", {"n": str(i)}, reply=False) for i in range(200)]
        host.wait_log("started (test_side_effect", count=3)
        ctl("stop")
        host.wait_log("broker connection lost")
        caller.close()
        ctl("start")
        host.wait_log("broker connection restored", timeout=30)
        caller = Caller(broker, host.queue, host.topic)
        second = [caller.send("test_side_effect", {"n": str(i)}, reply=False)
                  for i in range(200, 300)]
        for rid in second:
            caller.wait_event(rid, timeout=60)
        # Every request of the first burst ran (its side effect exists), whether its event
        # went out before the restart or after the redelivery.
        done = {p.stem for p in (host.tmp / "cache" / "side-effects").glob("*.done")}
        missing = sorted({str(i) for i in range(300)} - done, key=int)
        assert not missing, f"{len(missing)} lost: {missing[:20]}\n{host.text()[-3000:]}"
        assert host.proc is not None and host.proc.poll() is None
        caller.close()
        _ = (first, time)
    finally:
        host.stop()
