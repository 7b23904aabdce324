"""Resource faults, measured: a job printing a gigabyte, a cache on a full tmpfs, a
monitor answering 503 or hanging while pings go through, and the catalogue answering 503
or hanging under rucio_snapshot_update.  Prints JSON."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from common import HostProcess, RoundTrip, broker, pct
from opsagent.testing.http import FakeServer, Response, hang
from support import Caller, fill, tmpfs


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def ping(caller: Caller) -> float:
    started = time.perf_counter()
    rid = caller.send("health_ping", {})
    caller.wait_reply(lambda r: r.get("request_id") == rid, timeout=10)
    return time.perf_counter() - started


def _host(tmp: Path, conn: dict[str, str], **kw: Any) -> tuple[HostProcess, Caller]:
    host = HostProcess(tmp, conn, **kw).start()
    return host, Caller(conn, host.queue, host.topic)


def flood(env: dict[str, str], mb: int = 1024) -> dict[str, Any]:
    """Host RSS and ping latency while one job prints ``mb`` MiB; baseline: while idle."""
    with tempfile.TemporaryDirectory() as tmp:
        host, caller = _host(Path(tmp) / "flood", env)
        try:
            assert host.proc is not None
            caller.wait_event(caller.send("test_flood", {"mb": 1}))
            idle = [ping(caller) for _ in range(100)]
            before = rss_kib(host.proc.pid)
            samples: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append(rss_kib(host.proc.pid))  # type: ignore[union-attr]
                    time.sleep(0.02)

            t = threading.Thread(target=sample, daemon=True)
            t.start()
            started = time.monotonic()
            rid = caller.send("test_flood", {"mb": mb})
            busy = []
            while not caller.events_for(rid):
                busy.append(ping(caller))
            took = time.monotonic() - started
            stop.set()
            t.join()
            event = caller.wait_event(rid)
            return {"printed_mib": mb, "outcome": event["outcome"], "seconds": round(took, 2),
                    "rss_before_mib": round(before / 1024, 1),
                    "rss_max_mib": round(max(samples) / 1024, 1),
                    "log_bytes": host.log.stat().st_size,
                    "ping_idle_p50_ms": round(pct(idle, 50) * 1000, 2),
                    "ping_idle_max_ms": round(max(idle) * 1000, 2),
                    "ping_during_p50_ms": round(pct(busy, 50) * 1000, 2),
                    "ping_during_max_ms": round(max(busy) * 1000, 2), "pings_during": len(busy)}
        finally:
            caller.close()
            host.stop()


def full_cache(env: dict[str, str], size_mb: int = 4) -> dict[str, Any]:
    """A job writing past a ``size_mb`` MiB tmpfs cache; then a ping and a job that fits."""
    with tempfile.TemporaryDirectory() as tmp, tmpfs(Path(tmp) / "full" / "cache",
                                                     f"{size_mb}m"):
        host, caller = _host(Path(tmp) / "full", env)
        try:
            before = ping(caller)
            event = caller.wait_event(caller.send("test_fill", {"mb": 4 * size_mb}), 30)
            after = [ping(caller) for _ in range(20)]
            fits = caller.wait_event(caller.send("test_fill", {"mb": 1, "name": "s"}))
            assert host.proc is not None
            return {"tmpfs_mib": size_mb, "asked_mib": 4 * size_mb,
                    "outcome": event["outcome"], "event": event["msg_type"],
                    "reason": event.get("reason"), "host_alive": host.proc.poll() is None,
                    "ping_before_ms": round(before * 1000, 2),
                    "ping_after_max_ms": round(max(after) * 1000, 2),
                    "next_job_outcome": fits["outcome"]}
        finally:
            caller.close()
            host.stop()


def full_state(env: dict[str, str], size_mb: int = 2, jobs: int = 20) -> dict[str, Any]:
    """The state directory (the journal) on a full ``size_mb`` MiB tmpfs: ``jobs``
    requests and pings meanwhile; then the space freed, the time until the kept ends are
    recorded, a job after it, and what a second host finds left on the queue."""
    with tempfile.TemporaryDirectory() as tmp, tmpfs(Path(tmp) / "full" / "state",
                                                     f"{size_mb}m") as state:
        host, caller = _host(Path(tmp) / "full", env)
        try:
            before = ping(caller)
            filler = fill(state)
            rids = [caller.send("test_noop", {}) for _ in range(jobs)]
            events = [caller.wait_event(rid, 30) for rid in rids]
            during = [ping(caller) for _ in range(20)]
            assert host.proc is not None
            alive = host.proc.poll() is None
            freed = time.monotonic()
            filler.unlink()
            host.wait_log("job end(s) recorded after the journal refused them", 30)
            recorded_s = time.monotonic() - freed
            after = caller.wait_event(caller.send("test_noop", {}))
        finally:
            host.stop()
        second = HostProcess(Path(tmp) / "second", env, queue=host.queue,
                             topic=host.topic).start()
        time.sleep(1.0)
        left = second.text().count(" started (")
        second.stop()
        caller.close()
        reasons = {e.get("reason") for e in events}
        return {"tmpfs_mib": size_mb, "requests": jobs,
                "outcomes": sorted({e["outcome"] for e in events}),
                "reason": reasons.pop() if len(reasons) == 1 else sorted(map(str, reasons)),
                "host_alive": alive, "ping_before_ms": round(before * 1000, 2),
                "ping_during_max_ms": round(max(during) * 1000, 2),
                "recorded_after_freeing_s": round(recorded_s, 2),
                "next_job_outcome": after["outcome"], "left_on_queue": left}


def monitor(env: dict[str, str], n: int = 100) -> dict[str, Any]:
    """Ping latency with no monitor (baseline), a monitor answering 503, a hung one."""
    out: dict[str, Any] = {}
    for mode in ("none", "503", "hang"):
        with tempfile.TemporaryDirectory() as tmp, FakeServer() as mon:
            answer: Any = hang if mode == "hang" else Response.unavailable()
            mon.route("POST", "/api/systemagents/heartbeat/", answer)
            mon.route("POST", "/api/logs/", answer)
            extra = {} if mode == "none" else {"monitor": {
                "enabled": True, "url": mon.url, "heartbeat_seconds": 1, "timeout_seconds": 2,
                "queue_limit": 10}}
            host, caller = _host(Path(tmp) / mode, env, name=f"mon{mode}", extra=extra,
                                 env={"SWF_API_TOKEN": "monitor-token-" + uuid.uuid4().hex})
            try:
                pings = []
                for i in range(n):
                    caller.wait_event(caller.send("test_echo", {"text": f"job {i}"}))
                    time.sleep(0.06)  # past the caller's delayed ACK (see test_monitor)
                    pings.append(ping(caller))
                posts = (len(mon.requests_to("POST", "/api/systemagents/heartbeat/"))
                         + len(mon.requests_to("POST", "/api/logs/")))
                out[mode] = {"ping_p50_ms": round(statistics.median(pings) * 1000, 2),
                             "ping_p99_ms": round(pct(pings, 99) * 1000, 2),
                             "ping_max_ms": round(max(pings) * 1000, 2),
                             "monitor_posts": posts}
            finally:
                caller.close()
                host.stop()
    return out


#: The catalogue client's settings in the catalogue measurement: one call's bound is
#: tries * timeout + the waits between tries (backoff, doubling).
CATALOGUE = {"catalogue_timeout": 2.0, "catalogue_tries": 3, "catalogue_backoff": 0.5}


def catalogue_bound() -> float:
    c = CATALOGUE
    tries = int(c["catalogue_tries"])
    return c["catalogue_tries"] * c["catalogue_timeout"] + sum(
        c["catalogue_backoff"] * 2**k for k in range(tries - 1))


def catalogue(env: dict[str, str], jobs: int = 3, min_pings: int = 100) -> dict[str, Any]:
    """rucio_snapshot_update against a catalogue answering 503 or hanging, pinged all the
    while; baseline: the same job against a catalogue that answers at once (no campaign
    is current, so the job ends there, before Rucio).  Pings go on a connection of their
    own: on the caller's, a reply right behind a job's event waits for the caller's
    delayed ACK (~40 ms, the broker does not set TCP_NODELAY), which is not the host's."""
    out: dict[str, Any] = {"settings": dict(CATALOGUE), "bound_s": catalogue_bound()}
    for mode in ("none", "503", "hang"):
        with tempfile.TemporaryDirectory() as tmp, FakeServer() as pcs:
            url = pcs.url
            answer: Any = {"none": [], "503": Response.unavailable(), "hang": hang}[mode]
            pcs.route("GET", "/pcs/api/campaigns/", answer)
            host, caller = _host(
                Path(tmp) / f"pcs{mode}", env, name=f"pcs{mode}", paths=(),
                env={"BENCH_RUCIO_PASSWORD": "never-used"},
                extra={"capabilities": {"allow": ["rucio_snapshot_update"]},
                       "credentials.rucio_userpass": {"env": "BENCH_RUCIO_PASSWORD"},
                       "capability.rucio_snapshot_update": {
                           # Never reached: without campaigns the catalogue is asked first.
                           "rucio_url": "http://127.0.0.1:9", "rucio_account": "bench",
                           "rucio_username": "bench", "catalogue_url": url, **CATALOGUE}})
            pinger = RoundTrip(env)
            body = {"msg_type": "health_ping", "namespace": "prodops"}
            try:
                pinger.measure(host.queue, body, 20)
                if mode == "none":
                    idle = []
                    for _ in range(min_pings):
                        idle += pinger.measure(host.queue, body, 1)
                        time.sleep(0.02)
                    out["idle"] = {"pings": len(idle),
                                   "ping_p50_ms": round(pct(idle, 50) * 1000, 2),
                                   "ping_p99_ms": round(pct(idle, 99) * 1000, 2),
                                   "ping_max_ms": round(max(idle) * 1000, 2)}
                pings: list[float] = []
                seconds: list[float] = []
                tries: list[int] = []
                errors: set[str] = set()
                ok: set[bool] = set()
                while len(seconds) < jobs or len(pings) < min_pings:
                    before = len(pcs.requests_to("GET", "/pcs/api/campaigns/"))
                    started = time.monotonic()
                    rid = caller.send("rucio_snapshot_update", {"created_by": "bench"})
                    while not caller.events_for(rid):
                        if time.monotonic() - started > out["bound_s"] + 60:
                            raise RuntimeError(f"no event for {rid} within the bound + 60 s; "
                                               f"host log:\n{host.text()[-3000:]}")
                        pings += pinger.measure(host.queue, body, 1)
                        time.sleep(0.02)
                    seconds.append(time.monotonic() - started)
                    event = caller.wait_event(rid)
                    ok.add(event["ok"])
                    errors.add(str(event.get("error", "")).replace(url, "<catalogue>")
                               .replace(f"port={pcs.port}", "port=<port>"))
                    tries.append(len(pcs.requests_to("GET", "/pcs/api/campaigns/")) - before)
                assert host.proc is not None
                out[mode] = {"jobs": len(seconds), "ok": sorted(ok), "errors": sorted(errors),
                             "tries_per_job": sorted(set(tries)),
                             "job_mean_s": round(statistics.fmean(seconds), 2),
                             "job_max_s": round(max(seconds), 2),
                             "host_alive": host.proc.poll() is None, "pings": len(pings),
                             "ping_p50_ms": round(pct(pings, 50) * 1000, 2),
                             "ping_p99_ms": round(pct(pings, 99) * 1000, 2),
                             "ping_max_ms": round(max(pings) * 1000, 2)}
            finally:
                pinger.close()
                caller.close()
                host.stop()
    return out


def main() -> None:
    env = broker()
    if sys.argv[1:] == ["catalogue"]:
        print(json.dumps({"catalogue": catalogue(env)}, indent=2))
        return
    print(json.dumps({"flood": flood(env), "full_cache": full_cache(env),
                      "monitor": monitor(env), "catalogue": catalogue(env)}, indent=2))


if __name__ == "__main__":
    main()
