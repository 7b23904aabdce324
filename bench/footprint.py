"""Start-up to subscribed, idle RSS, and RSS after many requests."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import HostProcess, broker, rss_kb
from throughput import fill


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
        time.sleep(1.0)
        idle = rss_kb(host.proc.pid)
        fill(env, host.queue, 2000, {"msg_type": "test_noop", "namespace": "prodops"}, "warm")
        host.wait_log("ended ok", timeout=120, count=2000)
        warm = rss_kb(host.proc.pid)
        # A steady load in batches: a backlog of 100,000 at once exceeds what the test
        # broker (256 MB heap) holds without flow control, which is not what is measured.
        batch = 5000
        for done in range(0, n, batch):
            fill(env, host.queue, batch, {"msg_type": "test_noop", "namespace": "prodops"},
                 f"b{done}-")
            host.wait_log("ended ok", timeout=300, count=2000 + done + batch)
        after = rss_kb(host.proc.pid)
        host.stop()
    return {"startup_to_subscribed_s": round(startup, 3), "idle_rss_mb": round(idle / 1024, 1),
            "rss_after_warmup_mb": round(warm / 1024, 1),
            f"rss_after_{n}_requests_mb": round(after / 1024, 1),
            "rss_growth_mb": round((after - warm) / 1024, 1)}


if __name__ == "__main__":
    print(run())
