"""health_ping round trip: idle, and with every worker busy and 1,000 jobs queued.

Baselines in the same run on the same broker: a plain stomp.py responder that acks then
replies, without and with TCP_NODELAY.  ``run()`` keeps every round trip too
(``samples_ms``), so the latency plot is drawn from the measurement itself.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import stomp
from common import HostProcess, RawResponder, RoundTrip, broker, connect, summary_ms

N = 400
#: Round trips that warm the broker up first.
WARMUP = 5000


def drain(env: dict[str, str], queue: str, n: int) -> None:
    """Consume what the killed host left, so the broker's memory is free for what follows."""
    got = threading.Semaphore(0)

    class L(stomp.ConnectionListener):
        def on_message(self, frame: object) -> None:
            got.release()

    conn = connect(env, listener=L())
    conn.subscribe(queue, id="d", ack="auto")
    for _ in range(n):
        if not got.acquire(timeout=10):
            break
    conn.disconnect()


def run() -> dict[str, Any]:
    env = broker()
    out: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}

    def measured(name: str, values: list[float]) -> dict[str, float]:
        samples[name] = [round(v * 1000, 3) for v in values]
        return summary_ms(values)

    rt = RoundTrip(env)
    # A broker just started (make bench restarts it) runs its first thousands of messages
    # in the JVM's interpreter: warm it up before anything is measured.
    q = f"/queue/bench.warm.{uuid.uuid4().hex[:8]}"
    responder = RawResponder(env, q, True)
    rt.measure(q, {"msg_type": "health_ping"}, WARMUP)
    responder.close()
    for name, nodelay in (("baseline_raw_no_nodelay", False), ("baseline_raw_nodelay", True)):
        q = f"/queue/bench.raw.{uuid.uuid4().hex[:8]}"
        responder = RawResponder(env, q, nodelay)
        rt.measure(q, {"msg_type": "health_ping"}, 20)
        out[name] = measured(name, rt.measure(q, {"msg_type": "health_ping"}, N))
        responder.close()
    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env).start()
        try:
            ping = {"msg_type": "health_ping", "namespace": "prodops"}
            # Idle means settled: right after the host subscribes its fork server may
            # still be importing the plugins, on the same two cores.
            time.sleep(2.0)
            rt.measure(host.queue, ping, 200)
            out["opsagent_idle"] = measured("opsagent_idle", rt.measure(host.queue, ping, N))
            # test_noop: thread capability, concurrency 2 -- 2 running + 1,000 queued.
            filler = connect(env)
            for i in range(1002):
                filler.send(host.queue, json.dumps({"msg_type": "test_noop", "seconds": 60,
                                                     "request_id": f"busy-{i}"}).encode())
            deadline = time.monotonic() + 30
            while host.text().count("started (test_noop") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # let the broker hand over the queued 1,000
            out["opsagent_saturated"] = measured("opsagent_saturated",
                                                 rt.measure(host.queue, ping, N))
            filler.disconnect()
        finally:
            host.kill9()
            drain(env, host.queue, 1002)
    rt.close()
    out["samples_ms"] = samples
    return out


if __name__ == "__main__":
    for k, v in run().items():
        if k != "samples_ms":
            print(f"{k:28} {v}")
