"""A broker restart under load: the host reconnects by itself and nothing is lost."""

from __future__ import annotations

import sys
import time

import pytest
from support import ROOT, Caller, HostProcess

pytestmark = [pytest.mark.broker, pytest.mark.slow]

sys.path.insert(0, str(ROOT / "bench"))

from chaos import PersistentBroker  # noqa: E402


@pytest.fixture
def persistent_broker(broker, tmp_path):
    """A persistent broker of its own, of the kind of the ``broker`` run."""
    kind = broker["BROKER"]
    own = PersistentBroker(tmp_path / "svc", {"classic": 61623, "artemis": 61723}[kind], kind)

    def ctl(cmd: str) -> None:
        {"start": own.start, "stop": own.stop}[cmd]()

    ctl("start")
    yield ctl, own.connection
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
