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
import os
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
from common import HostProcess, broker, broker_pid, connect, cpu_s, prefetch_headers

N = 20000


def fill(env: dict[str, str], queue: str, n: int, body: dict[str, Any], prefix: str = "r"
         ) -> None:
    conn = connect(env)
    for i in range(n):
        conn.send(queue, json.dumps({**body, "request_id": f"{prefix}{i}"}).encode())
    conn.disconnect()


def raw_loop(env: dict[str, str], n: int, *, events: bool = False) -> dict[str, Any]:
    """A plain stomp.py consumer: ack each message as it arrives.

    With ``events`` the consumer also does the wire work the contract asks of the host
    for each request, and nothing else: parse the JSON body, publish one terminal event
    (JSON), then ack.  That consumer runs in a process of its own and the time runs from
    its subscription until a watcher here has received the last event: measured exactly
    as :func:`host_run` measures the host.
    """
    queue = f"/queue/bench.tp.{uuid.uuid4().hex[:8]}"
    fill(env, queue, n, {"msg_type": "test_noop", "namespace": "prodops"})
    if events:
        return _raw_events(env, queue, n)
    b0, c0 = cpu_s(broker_pid()), time.process_time()
    elapsed = raw_consumer(env, queue, n)
    return _figures(n, elapsed, consumer=time.process_time() - c0,
                    broker=cpu_s(broker_pid()) - b0)


def _figures(n: int, elapsed: float, **cpu: float) -> dict[str, Any]:
    """requests/s and the CPU each process spent per request (us) over one run."""
    return {"per_s": n / elapsed,
            "cpu_us": {k: round(v / n * 1e6, 1) for k, v in cpu.items()}}


def raw_consumer(env: dict[str, str], queue: str, n: int, topic: str | None = None) -> float:
    """Consume ``n`` messages, acking each; with ``topic`` also publish one JSON event per
    message there first (run in its own process by :func:`_raw_events`, which waits for
    the "subscribed" line, and then reads this process's CPU seconds from the last line).
    Seconds from the subscription to the last ack."""
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
    t0, c0 = time.perf_counter(), time.process_time()
    conn.subscribe(queue, id="s", ack="client-individual",
                   headers=prefetch_headers(2000))
    if topic is not None:
        print("subscribed", flush=True)
    done.wait(300)
    elapsed = time.perf_counter() - t0
    if topic is not None:
        print(f"cpu {time.process_time() - c0}", flush=True)
    conn.disconnect()
    return elapsed


def _raw_events(env: dict[str, str], queue: str, n: int) -> dict[str, Any]:
    topic = f"/topic/bench.tp.{uuid.uuid4().hex[:8]}"
    watcher, done, seen = _watch(env, topic, n)
    code = (f"import throughput as t; "
            f"t.raw_consumer({env!r}, {queue!r}, {n}, {topic!r})")
    consumer = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent,
                                stdout=subprocess.PIPE, text=True)
    assert consumer.stdout is not None
    consumer.stdout.readline()
    t0, b0, w0 = time.perf_counter(), cpu_s(broker_pid()), time.process_time()
    done.wait(300)
    elapsed = time.perf_counter() - t0
    broker_cpu, watcher_cpu = cpu_s(broker_pid()) - b0, time.process_time() - w0
    consumer_cpu = float(consumer.stdout.readline().split()[1])
    consumer.wait(60)
    watcher.disconnect()
    if seen[0] != n:
        raise RuntimeError(f"only {seen[0]} of {n} events")
    return _figures(n, elapsed, consumer=consumer_cpu, broker=broker_cpu, watcher=watcher_cpu)


def _watch(env: dict[str, str], topic: str, n: int
           ) -> tuple[stomp.Connection12, threading.Event, list[int]]:
    """A subscriber to ``topic`` that sets the event once it has had ``n`` messages."""
    done = threading.Event()
    seen = [0]

    class W(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            seen[0] += 1
            if seen[0] == n:
                done.set()

    watcher = connect(env, listener=W())
    watcher.subscribe(topic, id="t", ack="auto")
    return watcher, done, seen


def host_run(env: dict[str, str], n: int,
             extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env, extra=extra)
        fill(env, host.queue, n, {"msg_type": "test_noop", "namespace": "prodops"})
        watcher, done, seen = _watch(env, host.topic, n)
        host.start(wait=False)
        host.wait_log("subscribed to", timeout=30)
        assert host.proc is not None
        pid = host.proc.pid
        t0, h0 = time.perf_counter(), cpu_s(pid)
        b0, w0 = cpu_s(broker_pid()), time.process_time()
        done.wait(600)
        elapsed = time.perf_counter() - t0
        cpu = {"consumer": cpu_s(pid) - h0, "broker": cpu_s(broker_pid()) - b0,
               "watcher": time.process_time() - w0}
        watcher.disconnect()
        host.stop()
        if seen[0] != n:
            raise RuntimeError(f"only {seen[0]} of {n} events")
        return _figures(n, elapsed, **cpu)


def measure(call: str) -> dict[str, Any]:
    """``call`` (an expression on this module) in a fresh process: what one measurement
    leaves behind in a process (connections, threads) slowed the next one's watcher."""
    code = f"import json, throughput as t; print(json.dumps(t.{call}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _median_cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r["cpu_us"][k] for r in runs) for k in runs[0]["cpu_us"]}


def run(n: int = N, rounds: int = 3) -> dict[str, Any]:
    """Alternating rounds of the raw loops and the host, each in its own process, after
    one warm-up of each (the broker's JIT); the median of each.

    Beside each rate, the CPU each process spent per request (median of the rounds): the
    consumer (the raw loop or the host), the broker, and the watcher counting events.
    ``budget`` is what that leaves the host at the target rate on this machine: the
    watcher and the broker need what they needed in the host's runs, and one process
    cannot use more than one core (the GIL)."""
    calls = {"raw": f"raw_loop(t.broker(), {n})",
             "raw_events": f"raw_loop(t.broker(), {n}, events=True)",
             "host": f"host_run(t.broker(), {n})"}
    for call in calls.values():
        measure(call.replace(str(n), str(n // 4), 1))
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            got[key].append(measure(call))
    raw, raw_ev, host = (statistics.median(r["per_s"] for r in got[k])
                         for k in ("raw", "raw_events", "host"))
    cpu = {k: _median_cpu(v) for k, v in got.items()}
    target = TARGET * raw
    wall_us = 1e6 / target
    others = cpu["host"]["broker"] + cpu["host"]["watcher"]
    cpus = os.cpu_count() or 1
    budget = min(wall_us, cpus * wall_us - others)
    # Were the events counted some other way than by a watcher on this machine.
    budget_unwatched = min(wall_us, cpus * wall_us - cpu["host"]["broker"])
    return {"requests": n, "rounds": rounds,
            "raw_consume_ack_per_s": round(raw),
            "raw_consume_event_ack_per_s": round(raw_ev),
            "opsagent_per_s": round(host),
            "opsagent_rounds_per_s": [round(r["per_s"]) for r in got["host"]],
            "ratio": round(host / raw, 3),
            "ratio_to_raw_with_events": round(host / raw_ev, 3),
            "cpu_us_per_request": cpu,
            "target_per_s": round(target),
            "host_budget_us_at_target": round(budget, 1),
            "host_budget_us_without_watcher": round(budget_unwatched, 1),
            "cpus": cpus}


TARGET = 0.8
SWEEP = (1, 2, 4, 8, 16)
SWEEP_N = 5000


def sweep(concurrencies: tuple[int, ...] = SWEEP, n: int = SWEEP_N) -> dict[str, Any]:
    """requests/s of the no-op capability at each lane concurrency; raw loop beside it."""
    env = broker()
    raw = raw_loop(env, n)["per_s"]
    points = []
    for c in concurrencies:
        rate = measure(f"host_run(t.broker(), {n}, "
                       f"{{'capability.test_noop': {{'concurrency': {c}}}}})")["per_s"]
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
        print(json.dumps(run(args.requests or N), indent=1))


if __name__ == "__main__":
    main()
