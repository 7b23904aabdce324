"""Notifications through a real host on the real broker: a job's end reaches Mattermost;
a host SIGKILLed while its webhook is down posts what was pending after its restart,
once each; a rule whose URL credential is missing stops the host at start-up."""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path

import pytest
from opsagent.testing import FakeMattermost


def wait_until(pred, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def credential(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mattermost_ops"
    path.touch(mode=0o600)
    path.write_text(text + "\n")
    return path


def notify_config(cred: Path, **rule) -> dict:
    return {
        "credentials.mattermost_ops": {"file": str(cred)},
        "notify": [{"name": "ops", "url_credential": "mattermost_ops",
                    "msg_types": ["test_*"], "max_backoff_seconds": 1, **rule}],
    }


def pending(state: Path) -> int:
    db = sqlite3.connect(f"file:{state / 'notifications.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM messages WHERE state = 'pending'").fetchone()[0]
    finally:
        db.close()


@pytest.mark.broker
def test_pending_notifications_survive_a_sigkill_and_are_posted_once_each(
        host_factory, caller_for, tmp_path):
    with FakeMattermost() as mm:
        url = mm.hook("ops")
        mm.set("ops", "down")
        host = host_factory(name="notify", extra=notify_config(credential(tmp_path, url)))
        host.start()
        caller = caller_for(host)
        ids = [caller.send("test_echo", {"text": f"n{i}"}) for i in range(5)]
        for rid in ids:
            assert caller.wait_event(rid)["outcome"] == "ok"
        wait_until(lambda: mm.requests)  # asked, and refused
        state = host.tmp / "state"
        wait_until(lambda: pending(state) == 5)
        host.kill9()

        mm.set("ops", "ok")
        host.start()
        wait_until(lambda: len(mm.posts("ops")) >= 5)
        wait_until(lambda: pending(state) == 0)
        assert host.stop() == 0
        told = [p["props"]["opsagent_id"] for p in mm.posts("ops")]
        assert sorted(told) == sorted(f"ops/{rid}" for rid in ids), "each once, none lost"
        assert "5 message(s) left by the last run will be posted" in host.text()
        assert url.rsplit("/", 1)[1] not in host.text(), "the hook's key was logged"
        first = mm.posts("ops")[0]
        assert first["text"].startswith(":white_check_mark: test\\_echo **ok** in ")
        assert "on notify (job " in first["text"]
        print("posted:", first)


@pytest.mark.broker
def test_a_rule_whose_url_credential_is_missing_stops_the_host(host_factory, tmp_path):
    host = host_factory(name="nourl", extra=notify_config(tmp_path / "absent"))
    host.start(wait=False)
    assert host.wait(30) == 78
    assert "[[notify]] ops: credential 'mattermost_ops'" in host.text()


@pytest.mark.broker
def test_a_credential_that_is_not_a_url_stops_the_host(host_factory, tmp_path):
    host = host_factory(name="noturl", extra=notify_config(credential(tmp_path, "hunter2-x")))
    host.start(wait=False)
    assert host.wait(30) == 78
    assert "does not hold one http(s) URL" in host.text() and "hunter2-x" not in host.text()


def latencies(caller, n: int) -> tuple[list[float], list[float]]:
    """(ping round trips, job round trips), each job's end a notification to post."""
    pings, jobs = [], []
    for i in range(n):
        started = time.perf_counter()
        caller.wait_event(caller.send("test_echo", {"text": f"job {i}"}))
        jobs.append(time.perf_counter() - started)
        time.sleep(0.06)  # past the caller's delayed ACK of the event (see test_monitor)
        started = time.perf_counter()
        rid = caller.send("health_ping", {})
        caller.wait_reply(lambda r, rid=rid: r.get("request_id") == rid, timeout=10)
        pings.append(time.perf_counter() - started)
    return pings, jobs


@pytest.mark.broker
def test_a_hung_webhook_never_slows_a_ping_or_a_job(host_factory, caller_for, tmp_path):
    with FakeMattermost() as mm:
        url = mm.hook("ops")
        mm.set("ops", "hang")
        plain = host_factory(name="plain").start()
        hung = host_factory(name="hung", extra=notify_config(
            credential(tmp_path, url), timeout_seconds=2, rate_limit=1000)).start()
        base, _ = latencies(caller_for(plain), 25)
        slow, jobs = latencies(caller_for(hung), 25)
        assert mm.requests, "the webhook was asked, and never answered"
    p50_base, p50_slow = statistics.median(base), statistics.median(slow)
    print(f"ping p50 {p50_base * 1000:.2f} ms without notifications, {p50_slow * 1000:.2f} ms "
          f"with a hung webhook (max {max(slow) * 1000:.2f} ms); job max {max(jobs) * 1000:.1f} ms")
    assert p50_slow <= max(3 * p50_base, p50_base + 0.005)
    assert max(slow) < 0.5, "a ping waited behind a post (timeout 2 s)"
    assert max(jobs) < 1.0, f"a job took {max(jobs):.3f} s with the webhook hung"


@pytest.mark.broker
def test_a_host_killed_after_a_post_and_before_its_mark_posts_it_again_with_its_key(
        host_factory, caller_for, tmp_path):
    """The one duplicate at-least-once allows, and what lets a receiver drop it."""
    with FakeMattermost() as mm:
        url = mm.hook("ops")
        host = host_factory(name="dup", extra=notify_config(credential(tmp_path, url)))
        host.start()
        killed: list[int] = []

        def kill_the_poster(_name, _body):
            if not killed:  # the post is made; the host dies before it hears "ok"
                killed.append(host.proc.pid)
                host.proc.kill()

        mm.on_post = kill_the_poster
        rid = caller_for(host).send("test_echo", {"text": "once"})
        wait_until(lambda: killed)
        host.wait()
        host.start()
        wait_until(lambda: len(mm.posts("ops")) == 2)
        wait_until(lambda: pending(host.tmp / "state") == 0)
        assert host.stop() == 0
        first, again = mm.posts("ops")
        assert first == again and first["props"]["opsagent_id"] == f"ops/{rid}"
