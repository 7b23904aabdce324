"""Shared pieces of the benchmarks: a host process, raw stomp.py baselines, percentiles,
and how a benchmark reports (its figures printed, its result handed to bench/run_all.py)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import stomp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from opsagent.transport.stomp import subscribe_headers  # noqa: E402
from support import SERVICE_OF, SERVICES, HostProcess, broker_env, login  # noqa: E402


def bench_broker() -> str:
    """The broker the benchmarks run on: ``classic`` (default) or ``artemis``, from
    ``OPSAGENT_BENCH_BROKER`` (bench/brokers.py sets it; the processes a benchmark starts
    inherit it)."""
    return os.environ.get("OPSAGENT_BENCH_BROKER", "classic")


def broker() -> dict[str, str]:
    return broker_env(bench_broker())


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 50) * 1000, 3), "p99_ms": round(pct(values, 99) * 1000, 3),
            "mean_ms": round(statistics.fmean(values) * 1000, 3), "n": len(values)}


def connect(env: dict[str, str], nodelay: bool = True, listener: Any = None
            ) -> stomp.Connection12:
    conn = stomp.Connection12([(env["ACTIVEMQ_HOST"], int(env["ACTIVEMQ_PORT"]))],
                              auto_decode=False)
    if listener is not None:
        conn.set_listener("l", listener)
    conn.connect(*login(env, "web").values(), wait=True)
    if nodelay:
        conn.transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


class RoundTrip:
    """A caller measuring request/reply round trips over a private reply queue."""

    def __init__(self, env: dict[str, str]) -> None:
        self.reply_to = f"/queue/bench.reply.{uuid.uuid4().hex[:10]}"
        self.got = threading.Event()
        self.last: dict[str, Any] = {}
        outer = self

        class L(stomp.ConnectionListener):
            def on_message(self, frame: Any) -> None:
                outer.last = json.loads(frame.body)
                outer.got.set()

        self.conn = connect(env, listener=L())
        self.conn.subscribe(self.reply_to, id="r", ack="auto")

    def measure(self, queue: str, body: dict[str, Any], n: int) -> list[float]:
        out = []
        for _ in range(n):
            self.got.clear()
            payload = json.dumps({**body, "reply_to": self.reply_to}).encode()
            t0 = time.perf_counter()
            self.conn.send(queue, payload)
            if not self.got.wait(10):
                raise RuntimeError(f"no reply on {queue}")
            if self.last.get("ok") is False or self.last.get("msg_type") == "request_rejected":
                raise RuntimeError(f"request failed: {self.last}")
            out.append(time.perf_counter() - t0)
        return out

    def close(self) -> None:
        self.conn.disconnect()


class RawResponder:
    """The baseline: a plain stomp.py consumer that acks each message, then replies."""

    def __init__(self, env: dict[str, str], queue: str, nodelay: bool) -> None:
        self.queue = queue
        outer = self

        class L(stomp.ConnectionListener):
            def on_message(self, frame: Any) -> None:
                body = json.loads(frame.body)
                outer.conn.ack(frame.headers["ack"])
                outer.conn.send(body["reply_to"], b'{"msg_type":"pong"}')

        self.conn = connect(env, nodelay=nodelay, listener=L())
        self.conn.subscribe(queue, id="s", ack="client-individual")

    def close(self) -> None:
        self.conn.disconnect()


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int:
    """The pid of the broker the benchmarks run on, as scripts/services.sh recorded it."""
    return int((SERVICES / "run" / f"{SERVICE_OF[bench_broker()]}.pid").read_text())


def prefetch_headers(n: int) -> dict[str, str]:
    """SUBSCRIBE headers for at most ``n`` unacknowledged messages on the benchmarks'
    broker, as the host asks for them (Artemis counts bytes: ``consumer-window-size``)."""
    return subscribe_headers(bench_broker(), n, exclusive=False)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}: {os.cpu_count()} CPU ({cpu}), {mem:.0f} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def result_option(ap: argparse.ArgumentParser) -> None:
    """``--json FILE``: where bench/run_all.py, the one writer of docs/performance.md,
    reads the result back to write the benchmark's section."""
    ap.add_argument("--json", type=Path, help="also write the result here, for bench/run_all.py")


def report(result: dict[str, Any], figures: list[str], to: Path | None) -> None:
    """Print ``result`` and the table rows of its figures; write it to ``to`` if given."""
    print(json.dumps(result, indent=1))
    for line in figures:
        print(line)
    if to is not None:
        to.write_text(json.dumps(result) + "\n")


__all__ = ["HostProcess", "RawResponder", "RoundTrip", "broker", "machine", "report",
           "result_option", "rss_kb", "summary_ms"]
