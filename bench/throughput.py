"""Throughput of a no-op thread capability over 20,000 requests vs a raw consume-and-ack loop.

Both consume a queue pre-filled with the same number of messages on the same broker;
the host's time runs from its subscription to the last terminal event on the topic.

``sweep()`` repeats the host's measurement at several lane concurrencies of the no-op
capability (``[capability.test_noop] concurrency``), each point in its own process,
beside the raw loop measured once in the same run:

    .venv/bin/python bench/throughput.py [--sweep 1,2,4,8,16] [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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


def raw_loop(env: dict[str, str], n: int, *, events: bool = False) -> float:
    """A plain stomp.py consumer: ack each message as it arrives.

    With ``events`` the consumer also does the wire work the contract asks of the host
    for each request, and nothing else: parse the JSON body, publish one terminal event
    (JSON, on the same connection, as the host does), then ack.  That consumer runs in a
    process of its own and the time runs from its subscription until a watcher here has
    received the last event: measured exactly as :func:`host_run` measures the host.
    """
    queue = f"/queue/bench.tp.{uuid.uuid4().hex[:8]}"
    fill(env, queue, n, {"msg_type": "test_noop", "namespace": "prodops"})
    if events:
        return _raw_events(env, queue, n)
    return n / raw_consumer(env, queue, n)


def raw_consumer(env: dict[str, str], queue: str, n: int, topic: str | None = None) -> float:
    """Consume ``n`` messages, acking each; with ``topic`` also publish one JSON event per
    message there first (run in its own process by :func:`_raw_events`, which waits for
    the "subscribed" line).  Seconds from the subscription to the last ack."""
    done = threading.Event()
    count = [0]

    class L(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            if topic is not None:
                body = json.loads(frame.body)
                event = {"msg_type": "test_noop_done", "request": body["msg_type"],
                         "request_id": body["request_id"], "outcome": "ok",
                         "sender": "raw", "namespace": body["namespace"]}
                conn.send(topic, json.dumps(event).encode(), content_type="application/json")
            conn.ack(frame.headers["ack"])
            count[0] += 1
            if count[0] == n:
                done.set()

    conn = connect(env, listener=L())
    t0 = time.perf_counter()
    conn.subscribe(queue, id="s", ack="client-individual",
                   headers={"activemq.prefetchSize": "2000"})
    if topic is not None:
        print("subscribed", flush=True)
    done.wait(300)
    elapsed = time.perf_counter() - t0
    conn.disconnect()
    return elapsed


def _raw_events(env: dict[str, str], queue: str, n: int) -> float:
    topic = f"/topic/bench.tp.{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    seen = [0]

    class W(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            seen[0] += 1
            if seen[0] == n:
                done.set()

    watcher = connect(env, listener=W())
    watcher.subscribe(topic, id="t", ack="auto")
    code = (f"import throughput as t; "
            f"t.raw_consumer({env!r}, {queue!r}, {n}, {topic!r})")
    consumer = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent,
                                stdout=subprocess.PIPE, text=True)
    assert consumer.stdout is not None
    consumer.stdout.readline()
    t0 = time.perf_counter()
    done.wait(300)
    elapsed = time.perf_counter() - t0
    consumer.wait(60)
    watcher.disconnect()
    if seen[0] != n:
        raise RuntimeError(f"only {seen[0]} of {n} events")
    return n / elapsed


def host_run(env: dict[str, str], n: int,
             extra: dict[str, dict[str, Any]] | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env, extra=extra)
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


def measure(call: str) -> float:
    """``call`` (an expression on this module) in a fresh process: what one measurement
    leaves behind in a process (connections, threads) slowed the next one's watcher."""
    code = f"import json, throughput as t; print(json.dumps(t.{call}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def run(n: int = N, rounds: int = 3) -> dict[str, Any]:
    """Alternating rounds of the raw loops and the host, each in its own process, after
    one warm-up of each (the broker's JIT); the median of each."""
    calls = {"raw": f"raw_loop(t.broker(), {n})",
             "raw_events": f"raw_loop(t.broker(), {n}, events=True)",
             "host": f"host_run(t.broker(), {n})"}
    for call in calls.values():
        measure(call.replace(str(n), str(n // 4), 1))
    got: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            got[key].append(measure(call))
    raw, raw_ev, host = (statistics.median(got[k]) for k in ("raw", "raw_events", "host"))
    return {"requests": n, "rounds": rounds,
            "raw_consume_ack_per_s": round(raw),
            "raw_consume_event_ack_per_s": round(raw_ev),
            "opsagent_per_s": round(host),
            "opsagent_rounds_per_s": [round(v) for v in got["host"]],
            "ratio": round(host / raw, 3),
            "ratio_to_raw_with_events": round(host / raw_ev, 3)}


SWEEP = (1, 2, 4, 8, 16)
SWEEP_N = 5000


def sweep(concurrencies: tuple[int, ...] = SWEEP, n: int = SWEEP_N) -> dict[str, Any]:
    """requests/s of the no-op capability at each lane concurrency; raw loop beside it."""
    env = broker()
    raw = raw_loop(env, n)
    points = []
    for c in concurrencies:
        rate = measure(f"host_run(t.broker(), {n}, "
                       f"{{'capability.test_noop': {{'concurrency': {c}}}}})")
        points.append({"concurrency": c, "opsagent_per_s": round(rate),
                       "ratio": round(rate / raw, 3)})
        print(f"concurrency {c}: {rate:.0f} requests/s", file=sys.stderr, flush=True)
    return {"requests": n, "raw_consume_ack_per_s": round(raw), "points": points}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=lambda v: tuple(int(x) for x in v.split(",")),
                    help="lane concurrencies, e.g. 1,2,4,8,16")
    ap.add_argument("--requests", type=int)
    args = ap.parse_args()
    if args.sweep:
        print(json.dumps(sweep(args.sweep, args.requests or SWEEP_N)))
    else:
        print(run(args.requests or N))


if __name__ == "__main__":
    main()
