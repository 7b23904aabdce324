"""Start-up to subscribed, idle RSS, and RSS after many requests."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import stomp
from common import HostProcess, broker, connect, rss_kb
from throughput import fill


class EventCounter(stomp.ConnectionListener):
    """Counts terminal events on the host's topic."""

    def __init__(self) -> None:
        self.n = 0
        self.cond = threading.Condition()

    def on_message(self, frame: Any) -> None:
        with self.cond:
            self.n += 1
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.n >= n, timeout):
                raise RuntimeError(f"only {self.n} of {n} events within {timeout} s")


def run(n: int = 100_000) -> dict[str, float]:
    env = broker()
    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env, paths=())  # the installed plugins only
        t0 = time.monotonic()
        host.start(wait=False)
        host.wait_log("subscribed to", timeout=30)
        startup = time.monotonic() - t0
        host.stop()
    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env).start()
        assert host.proc is not None
        counter = EventCounter()
        watcher = connect(env, listener=counter)
        watcher.subscribe(host.topic, id="t", ack="auto")
        time.sleep(1.0)
        idle = rss_kb(host.proc.pid)
        body = {"msg_type": "test_noop", "namespace": "prodops"}
        batch = 5000  # a steady load rather than one 100,000-message backlog
        # Warm-up: one batch of the same size, so the figure is growth under the load,
        # not the memory of holding one 5,000-request burst (which stays with the heap).
        fill(env, host.queue, batch, body, "warm")
        counter.wait_for(batch, 120)
        warm = rss_kb(host.proc.pid)
        curve = []
        for done in range(0, n, batch):
            fill(env, host.queue, batch, body, f"b{done}-")
            counter.wait_for(batch + done + batch, 300)
            curve.append(round(rss_kb(host.proc.pid) / 1024, 1))
        print("rss curve (MB, every 5,000 requests):", curve)
        time.sleep(1.0)
        after = rss_kb(host.proc.pid)
        watcher.disconnect()
        host.stop()
    return {"startup_to_subscribed_s": round(startup, 3), "idle_rss_mb": round(idle / 1024, 1),
            "rss_after_warmup_mb": round(warm / 1024, 1),
            f"rss_after_{n}_requests_mb": round(after / 1024, 1),
            "rss_growth_mb": round((after - warm) / 1024, 1)}


if __name__ == "__main__":
    print(run())
