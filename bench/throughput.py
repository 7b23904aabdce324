"""Throughput of a no-op thread capability over 20,000 requests vs a raw consume-and-ack loop.

Both consume a queue pre-filled with the same number of messages on the same broker;
the host's time runs from its subscription to the last terminal event on the topic.
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
from common import HostProcess, broker, connect

N = 20000


def fill(env: dict[str, str], queue: str, n: int, body: dict[str, Any], prefix: str = "r"
         ) -> None:
    conn = connect(env)
    for i in range(n):
        conn.send(queue, json.dumps({**body, "request_id": f"{prefix}{i}"}).encode())
    conn.disconnect()


def raw_loop(env: dict[str, str], n: int) -> float:
    queue = f"/queue/bench.tp.{uuid.uuid4().hex[:8]}"
    fill(env, queue, n, {"msg_type": "test_noop", "namespace": "prodops"})
    done = threading.Event()
    count = [0]

    class L(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            conn.ack(frame.headers["ack"])
            count[0] += 1
            if count[0] == n:
                done.set()

    conn = connect(env, listener=L())
    t0 = time.perf_counter()
    conn.subscribe(queue, id="s", ack="client-individual",
                   headers={"activemq.prefetchSize": "2000"})
    done.wait(300)
    elapsed = time.perf_counter() - t0
    conn.disconnect()
    return n / elapsed


def host_run(env: dict[str, str], n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env)
        fill(env, host.queue, n, {"msg_type": "test_noop", "namespace": "prodops"})
        done = threading.Event()
        count = [0]

        class L(stomp.ConnectionListener):
            def on_message(self, frame: Any) -> None:
                count[0] += 1
                if count[0] == n:
                    done.set()

        watcher = connect(env, listener=L())
        watcher.subscribe(host.topic, id="t", ack="auto")
        host.start(wait=False)
        host.wait_log("subscribed to", timeout=30)
        t0 = time.perf_counter()
        done.wait(600)
        elapsed = time.perf_counter() - t0
        watcher.disconnect()
        host.stop()
        if count[0] != n:
            raise RuntimeError(f"only {count[0]} of {n} events")
        return n / elapsed


def run(n: int = N) -> dict[str, float]:
    env = broker()
    raw = raw_loop(env, n)
    ours = host_run(env, n)
    return {"requests": n, "raw_consume_ack_per_s": round(raw), "opsagent_per_s": round(ours),
            "ratio": round(ours / raw, 3)}


if __name__ == "__main__":
    print(run())
