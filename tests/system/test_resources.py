"""Resource faults: a job that prints a gigabyte, a cache that fills up."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support import fill, tmpfs

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler:
    """The host's resident memory, sampled every 20 ms while a job runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ping(caller) -> float:
    started = time.perf_counter()
    rid = caller.send("health_ping", {})
    caller.wait_reply(lambda r: r.get("request_id") == rid, timeout=10)
    return time.perf_counter() - started


def test_a_gigabyte_of_output_is_capped_and_host_memory_stays_flat(host_factory, caller_for):
    host = host_factory().start()
    caller = caller_for(host)
    assert host.proc is not None
    caller.wait_event(caller.send("test_flood", {"mb": 1}))  # warm: fork server, imports
    before = rss_kib(host.proc.pid)
    with RssSampler(host.proc.pid) as rss:
        started = time.monotonic()
        rid = caller.send("test_flood", {"mb": 1024})
        pings = []
        while not caller.events_for(rid):
            pings.append(ping(caller))
        took = time.monotonic() - started
    event = caller.wait_event(rid)
    assert event["outcome"] == "ok" and event["printed_mb"] == 1024, event
    growth = max(rss.samples) - before
    print(f"1 GiB printed in {took:.1f} s; host RSS {before / 1024:.1f} MiB before, "
          f"max {max(rss.samples) / 1024:.1f} MiB during (+{growth / 1024:.1f} MiB); "
          f"{len(pings)} pings meanwhile, max {max(pings) * 1000:.1f} ms")
    assert growth < 32 * 1024, f"host RSS grew by {growth} KiB while a job printed 1 GiB"
    assert max(pings) < 1.0
    # What was kept is bounded: the head and tail of the output, in the host's log.
    assert host.log.stat().st_size < 4 << 20


@pytest.fixture
def small_cache(tmp_path):
    with tmpfs(tmp_path / "h0" / "cache", "4m") as where:
        yield where


def test_a_full_cache_fails_the_job_and_not_the_host(small_cache, host_factory, caller_for):
    host = host_factory().start()
    caller = caller_for(host)
    assert ping(caller) < 1.0
    rid = caller.send("test_fill", {"mb": 16, "name": "big"})
    event = caller.wait_event(rid, timeout=30)
    assert event["msg_type"] == "test_fill_failed" and event["outcome"] == "error", event
    assert "No space left on device" in event["reason"], event
    # The host is alive and still answers, and a job that fits runs once space is back.
    assert host.proc is not None and host.proc.poll() is None
    assert ping(caller) < 1.0
    fits = caller.send("test_fill", {"mb": 1, "name": "small"})
    assert caller.wait_event(fits)["outcome"] == "ok"
    assert (small_cache / "fill" / "small").stat().st_size == 1 << 20


def test_a_monitor_answering_503_costs_pings_nothing_and_is_not_hammered(host_factory,
                                                                       caller_for):
    from opsagent.testing.http import FakeServer, Response

    with FakeServer() as mon:
        mon.route("POST", "/api/systemagents/heartbeat/", Response.unavailable())
        mon.route("POST", "/api/logs/", Response.unavailable())
        host = host_factory(extra={"monitor": {"enabled": True, "url": mon.url,
                                               "heartbeat_seconds": 1, "timeout_seconds": 2}},
                            env={"SWF_API_TOKEN": "monitor-token-for-the-test"}).start()
        caller = caller_for(host)
        pings = []
        jobs = 20
        for i in range(jobs):
            caller.wait_event(caller.send("test_echo", {"text": f"job {i}"}))
            time.sleep(0.06)  # past the caller's delayed ACK (see test_monitor)
            pings.append(ping(caller))
        host.wait_log("failed (HTTP 503)")
        logs = len(mon.requests_to("POST", "/api/logs/"))
    assert max(pings) < 0.5, pings
    # Best effort: each record is posted once, a failure is not retried in a loop.
    assert 1 <= logs <= jobs, logs
    assert host.text().count("failed (HTTP 503)") <= 2, host.text()[-2000:]


@pytest.mark.parametrize("fault", ["503", "hang"])
def test_a_catalogue_answering_503_or_hanging_fails_the_job_in_bounded_time(
        fault, host_factory, caller_for):
    """rucio_snapshot_update asks the catalogue for its campaigns: a bounded number of tries,
    one structured error naming the catalogue, and the host answers pings all the while."""
    from opsagent.testing.http import FakeServer, Response, hang

    timeout, tries, backoff = 1.0, 2, 0.2
    bound = tries * timeout + backoff
    with FakeServer() as pcs:
        url = pcs.url
        pcs.route("GET", "/pcs/api/campaigns/", hang if fault == "hang" else Response.unavailable())
        host = host_factory(
            paths=(), env={"TEST_RUCIO_PASSWORD": "never-used"},
            extra={"credentials.rucio_userpass": {"env": "TEST_RUCIO_PASSWORD"},
                   "capability.rucio_snapshot_update": {
                       # Never reached: without campaigns the catalogue is asked first.
                       "rucio_url": "http://127.0.0.1:9", "rucio_account": "root",
                       "rucio_username": "ddmlab", "catalogue_url": url,
                       "catalogue_timeout": timeout, "catalogue_tries": tries,
                       "catalogue_backoff": backoff}}).start()
        caller = caller_for(host)
        ping(caller)
        started = time.monotonic()
        rid = caller.send("rucio_snapshot_update", {"created_by": "ann"})
        pings = []
        while not caller.events_for(rid):
            pings.append(ping(caller))
            time.sleep(0.02)
        took = time.monotonic() - started
        event = caller.wait_event(rid)
        tried = len(pcs.requests_to("GET", "/pcs/api/campaigns/"))
    assert event["msg_type"] == "rucio_snapshot_ready" and event["ok"] is False, event
    assert event["error"].startswith(
        f"no current campaign defined: cannot read campaigns from the catalogue: "
        f"GET {url}/pcs/api/campaigns/: "
        + ("HTTP 503 " if fault == "503" else "ReadTimeout: ")), event
    assert event["error"].endswith(f" after {tries} tries"), event
    assert tried == tries
    assert took < bound + 5.0, took  # + the job's process start and the event's way back
    assert pings and max(pings) < 0.5, pings
    assert host.proc is not None and host.proc.poll() is None


def writable(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    return float(re.search(r"^opsagent_journal_writable (\S+)$", text, re.M)[1])


@pytest.fixture
def small_state(tmp_path):
    with tmpfs(tmp_path / "h0" / "state", "2m") as where:
        yield where


def test_a_full_state_directory_fails_jobs_visibly_and_loses_nothing(
    small_state, host_factory, caller_for, broker
):
    host = host_factory(extra={"metrics": {"enabled": True, "port": 0}}).start()
    caller = caller_for(host)
    host.wait_log("/metrics")
    port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", host.text())[1])
    first = caller.send("test_noop", {})
    assert caller.wait_event(first)["outcome"] == "ok"
    assert writable(port) == 1
    # The journal's filesystem fills up.
    filler = fill(small_state)
    rids = [caller.send("test_noop", {}) for _ in range(5)]
    for rid in rids:
        event = caller.wait_event(rid, timeout=20)
        assert event["outcome"] == "error", event
        assert "not run: the host's journal cannot be written" in event["reason"], event
    assert ping(caller) < 1.0
    assert host.proc is not None and host.proc.poll() is None, "the host did not survive"
    said = "whose end is not recorded stay unacknowledged until it can"
    host.wait_log(said)
    assert host.text().count(said) == 1, "said once, not once a job"
    assert writable(port) == 0
    # Room again: the ends are recorded and their messages acknowledged.
    filler.unlink()
    host.wait_log("can be written again", timeout=10)
    # (The last end may have reached the journal only after the space was back.)
    host.wait_log("job end(s) recorded after the journal refused them", timeout=10)
    after = caller.send("test_noop", {})
    assert caller.wait_event(after)["outcome"] == "ok"
    assert writable(port) == 1
    assert host.stop() == 0
    # Nothing was left unacknowledged: a second host on the queue gets no message.
    second = host_factory(queue=host.queue, topic=host.topic).start()
    time.sleep(1.0)
    assert second.proc is not None and second.proc.poll() is None
    assert "started (" not in second.text(), second.text()[-2000:]
    # One event each, none published again.
    assert [e["outcome"] for e in caller.events if e.get("job_id") in rids] == ["error"] * 5


def test_a_job_over_its_memory_limit_ends_error_and_the_host_carries_on(host_factory,
                                                                        caller_for):
    host = host_factory(extra={"host": {"job_memory_limit_mb": 1024},
                               "capability.test_hog": {"memory_limit": 512}}).start()
    caller = caller_for(host)
    assert host.proc is not None
    ok = caller.wait_event(caller.send("test_hog", {"mb": 64}), timeout=30)
    assert ok["outcome"] == "ok" and ok["rlimit_as"] == 512 << 20, ok
    before = rss_kib(host.proc.pid)
    # In the job itself, and in a program it starts.
    for inp, reason in (
        ({"mb": 2048}, "ran out of memory: over its 512 MiB limit (memory_limit)"),
        ({"mb": 2048, "program": True}, "program failed: MemoryError"),
    ):
        event = caller.wait_event(caller.send("test_hog", inp), timeout=30)
        assert event["msg_type"] == "test_hog_failed" and event["outcome"] == "error", event
        assert event["reason"] == reason, event
    assert host.proc.poll() is None
    assert ping(caller) < 1.0
    assert rss_kib(host.proc.pid) - before < 16 * 1024
    # A job under its limit still runs.
    assert caller.wait_event(caller.send("test_hog", {"mb": 256}))["outcome"] == "ok"


def test_process_jobs_get_the_host_default_memory_limit(host_factory, caller_for):
    host = host_factory(extra={"host": {"job_memory_limit_mb": 768}}).start()
    caller = caller_for(host)
    event = caller.wait_event(caller.send("test_hog", {"mb": 1024}), timeout=30)
    assert event["reason"] == "ran out of memory: over its 768 MiB limit (memory_limit)", event
    event = caller.wait_event(caller.send("test_hog", {}), timeout=30)
    assert event["outcome"] == "ok" and event["rlimit_as"] == 768 << 20, event
