"""The monitor: heartbeats and action-log records as docs/wire.md has them, posted off the
message path, so a hung monitor never slows a ping."""

from __future__ import annotations

import os
import statistics
import time

import attrs
import opscaps
import pytest
from opsagent.host.config import MonitorConfig
from opsagent.reporting.health import JobEnd, Snapshot
from opsagent.reporting.monitor import Monitor
from opsagent.testing.http import FakeServer, Response, hang

HEARTBEAT = "/api/systemagents/heartbeat/"
LOGS = "/api/logs/"
HEARTBEAT_KEYS = {"instance_name", "agent_type", "status", "description", "mq_connected", "pid",
                  "hostname", "operational_state", "namespace"}
LOG_KEYS = {"app_name", "instance_name", "timestamp", "level", "levelname", "message", "module",
            "funcname", "lineno", "process", "thread", "extra_data"}


def bodies(server: FakeServer, path: str) -> list[dict]:
    return [r.json() for r in server.requests_to("POST", path)]


def wait_until(pred, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_heartbeats_and_action_log_follow_the_wire_contract(opsagent_harness, monkeypatch):
    monkeypatch.setenv("SWF_API_TOKEN", "monitor-api-token-1234")
    with FakeServer() as mon:
        mon.route("POST", HEARTBEAT, Response.json({"ok": True}, 201))
        mon.route("POST", LOGS, Response.json({"ok": True}, 201))
        h = opsagent_harness(modules=[opscaps], config={
            "host": {"instance": "ops-test"},
            "monitor": {"enabled": True, "url": mon.url, "heartbeat_seconds": 0.2}})
        wait_until(lambda: any(b["operational_state"] == "READY"
                               for b in bodies(mon, HEARTBEAT)))
        first = bodies(mon, HEARTBEAT)[0]
        assert set(first) == HEARTBEAT_KEYS
        assert first["agent_type"] == "PRODOPS" and first["instance_name"] == "ops-test"
        assert first["namespace"] == "prodops" and isinstance(first["pid"], int)
        # ops_needs_token has no credential here: the host is degraded, and says which.
        ready = [b for b in bodies(mon, HEARTBEAT) if b["operational_state"] == "READY"][0]
        assert ready["status"] == "WARNING" and ready["mq_connected"] is True
        assert "unavailable: ops_needs_token" in ready["description"]
        headers = mon.requests_to("POST", HEARTBEAT)[0].headers
        assert headers["Authorization"] == "Token monitor-api-token-1234"

        answer = h.send("fetch_payload_log", {"pandaid": 4242, "jeditaskid": "1001",
                                              "seconds": 0.6, "requested_by": "alice"})
        assert answer["outcome"] == "ok"
        assert any(b["operational_state"] == "PROCESSING" for b in bodies(mon, HEARTBEAT))
        h.send("ops_work", {"fail": True})
        wait_until(lambda: len(bodies(mon, LOGS)) == 2)
        fetched, failed = bodies(mon, LOGS)
        assert set(fetched) == LOG_KEYS
        assert fetched["app_name"] == "epicprod" and fetched["instance_name"] == "ops-agent"
        assert fetched["funcname"] == "payload_log_fetch" and fetched["lineno"] == 0
        assert fetched["levelname"] == "INFO"
        assert fetched["module"] == "epicprod_ops_agent"
        assert fetched["message"] == "payload_log_fetch panda_job:4242 ok"
        extra = fetched["extra_data"]
        # The old agent's extra_data, key for key, then this host's additions.
        legacy = {k: extra[k] for k in ("action", "outcome", "sublevel", "live_default",
                                        "subject_type", "subject_key", "username")}
        assert legacy == {"action": "payload_log_fetch", "outcome": "ok", "sublevel": "normal",
                          "live_default": False, "subject_type": "panda_job",
                          "subject_key": "4242", "username": "alice"}
        assert list(extra)[:8] == [*legacy, "duration_ms"]
        assert "reason" not in extra
        assert extra["pandaid"] == "4242" and extra["jeditaskid"] == "1001"
        assert 600 <= extra["duration_ms"] < 5000
        assert failed["levelname"] == "ERROR" and failed["extra_data"]["outcome"] == "error"
        assert failed["extra_data"]["action"] == "ops_work"
        assert failed["extra_data"]["reason"] == "asked to fail"
        # No subject, no user: the old agent left the keys out, and the words.
        assert failed["message"] == "ops_work error — asked to fail"
        assert not {"subject_type", "subject_key", "username"} & set(failed["extra_data"])

        h.stop()
        last = bodies(mon, HEARTBEAT)[-1]
        assert (last["status"], last["operational_state"], last["mq_connected"]) == (
            "EXITED", "EXITED", False)


def test_a_record_keeps_the_old_fields_from_echoed_ones_and_cuts_the_reason():
    monitor = Monitor(MonitorConfig(enabled=True, url="http://127.0.0.1:9"), instance="i",
                      namespace="prodops", token=None, snapshot=snapshot)
    end = JobEnd(job_id="j", msg_type="catalog_sync", status="error", duration=2.0499,
                 reason="x" * 400, action="catalog_sync", username="nightly",
                 sublevel="high", live_default=True,
                 counts={"steps": 14, "failed": ["b"], "outcome": "forged"},
                 echo={"action": "forged", "username": "forged", "task_name": "t"})
    record = monitor.action_record(end)
    extra = record["extra_data"]
    assert (extra["action"], extra["outcome"], extra["username"]) == (
        "catalog_sync", "error", "nightly")
    assert extra["reason"] == "x" * 300 and extra["duration_ms"] == 2049
    assert (extra["steps"], extra["failed"], extra["task_name"]) == (14, ["b"], "t")
    assert record["message"] == "catalog_sync error — " + "x" * 300
    assert (record["level"], record["levelname"]) == (40, "ERROR")
    configured = Monitor(MonitorConfig(enabled=True, url="http://127.0.0.1:9",
                                       log_module="ops", log_app_name="a"),
                         instance="i", namespace="p", token=None, snapshot=snapshot)
    assert (configured.action_record(end)["module"], configured.action_record(end)["app_name"]
            ) == ("ops", "a")


NOTICES = "/api/capcom/notices/ingest/"


def test_a_jobs_notices_are_posted_once_after_its_record_with_the_monitors_token():
    from opsagent import Notice

    with FakeServer() as mon:
        mon.route("POST", HEARTBEAT, Response.json({"ok": True}, 201))
        mon.route("POST", LOGS, Response.json({"ok": True}, 201))
        # The first notice is refused: it is not sent again (one attempt, as the old agent).
        answers = iter([Response.json({"detail": "busy"}, 503), Response.json({"ok": True})])
        mon.route("POST", NOTICES, lambda _req: next(answers))
        config = MonitorConfig(enabled=True, url=mon.url,
                               public_url="https://mon.example/prod")
        monitor = Monitor(config, instance="i", namespace="prodops",
                          token="monitor-api-token-1234", snapshot=snapshot)
        monitor.start()
        notices = (
            Notice(source="swf-campaign-delivery", severity="info", title="updated",
                   url="/snapper/epicprod/campaign/", dedup_key="delivery-daily:2026-12-02"),
            Notice(source="swf-campaign-delivery", severity="warning", title="failed",
                   url="https://elsewhere.example/logs/", dedup_key="delivery-daily-fail:x",
                   detail="rc=2"),
        )
        monitor.job_ended(JobEnd(job_id="j", msg_type="delivery_daily_rebuild", status="ok",
                                 duration=1.0, notices=notices))
        wait_until(lambda: len(mon.requests_to("POST", NOTICES)) == 2)
        time.sleep(0.3)
        monitor.stop()
    posted = mon.requests_to("POST", NOTICES)
    assert len(posted) == 2
    assert all(r.headers["Authorization"] == "Token monitor-api-token-1234" for r in posted)
    assert [r.json() for r in posted] == [
        {"source": "swf-campaign-delivery", "severity": "info", "title": "updated",
         "url": "https://mon.example/prod/snapper/epicprod/campaign/",
         "dedup_key": "delivery-daily:2026-12-02"},
        {"source": "swf-campaign-delivery", "severity": "warning", "title": "failed",
         "url": "https://elsewhere.example/logs/", "dedup_key": "delivery-daily-fail:x",
         "detail": "rc=2"},
    ]
    assert len(mon.requests_to("POST", LOGS)) == 1
    assert monitor.failed == 1


def test_a_capability_recorded_only_when_it_fails_posts_no_record_of_a_success():
    from opsagent import Capability, Outcome
    from opsagent.reporting.health import job_end

    @attrs.frozen
    class In:
        job_id: str = "1"

    cap = Capability(msg_type="assessment_completed", input=In, doer=lambda i, j: None,
                     events={"ok": "x", "error": "x", "timeout": "x"}, record="failed")
    ends = [job_end(cap, In(), outcome, job_id=f"j{n}", duration=1.0, echo={})
            for n, outcome in enumerate((Outcome.ok(), Outcome.error("enforce failed"),
                                         Outcome.timeout("timed out after 300s")))]
    assert [e.recorded for e in ends] == [False, True, True]
    with FakeServer() as mon:
        mon.route("POST", HEARTBEAT, Response.json({"ok": True}, 201))
        mon.route("POST", LOGS, Response.json({"ok": True}, 201))
        monitor = Monitor(MonitorConfig(enabled=True, url=mon.url), instance="i",
                          namespace="prodops", token=None, snapshot=snapshot)
        monitor.start()
        for end in ends:
            monitor.job_ended(end)
        wait_until(lambda: len(bodies(mon, LOGS)) == 2)
        monitor.stop()
    assert [b["extra_data"]["outcome"] for b in bodies(mon, LOGS)] == ["error", "timeout"]
    with pytest.raises(ValueError):
        attrs.evolve(cap, record="never")


def test_a_notice_is_checked_where_it_is_made():
    from opsagent import Notice, Outcome

    good = {"source": "swf-campaign-delivery", "severity": "info", "title": "t" * 400,
            "url": "/logs/", "dedup_key": "delivery-daily:2026-12-02", "detail": "d" * 3000}
    made = Notice(**good)
    assert len(made.title) == 300 and len(made.detail) == 2000
    for field, bad in (("severity", "error"), ("url", "javascript:alert(1)"),
                       ("url", "http://plain.example/"), ("dedup_key", "two words"),
                       ("source", "a b"), ("dedup_key", "")):
        with pytest.raises(ValueError):
            Notice(**{**good, field: bad})
    with pytest.raises(TypeError, match="expected Notice"):
        Outcome("ok", notices=[good])
    # Across the isolated child and through the journal: the notices come back as made.
    outcome = Outcome("ok", None, {"n": 1}, (), (made,))
    assert Outcome.from_json(outcome.to_json()) == outcome
    assert "notices" not in Outcome.ok().to_json()


def test_a_shutdown_over_the_bus_posts_agent_shutdown_naming_who_asked(opsagent_harness):
    with FakeServer() as mon:
        mon.route("POST", HEARTBEAT, Response.json({"ok": True}, 201))
        mon.route("POST", LOGS, Response.json({"ok": True}, 201))
        h = opsagent_harness(modules=[opscaps], config={
            "monitor": {"enabled": True, "url": mon.url}})
        h.publish("health_ping", reply_to="/queue/harness.pings")
        h.publish("shutdown", {"reason": "maintenance"}, broker_user=h.HOST_USER)
        h._thread.join(30)
        assert h.exit_status == 100
        (record,) = bodies(mon, LOGS)
        assert record["funcname"] == "agent_shutdown"
        assert (record["level"], record["levelname"]) == (30, "WARNING")
        extra = record["extra_data"]
        assert (extra["action"], extra["outcome"], extra["username"]) == (
            "agent_shutdown", "ok", h.HOST_USER)
        assert (extra["sublevel"], extra["live_default"]) == ("high", True)
        assert record["message"] == "agent_shutdown ok"
        assert "duration_ms" not in extra  # not a timed job, as the old agent sent it


def snapshot() -> Snapshot:
    return Snapshot(state="READY", broker_connected=True, capabilities=("x",), unavailable={},
                    broken=(), in_flight={}, queued={})


def test_a_journal_that_cannot_be_written_is_unhealthy_and_says_why():
    ok = snapshot()
    full = attrs.evolve(ok, journal_error="OperationalError: database or disk is full")
    assert ok.healthy and "JOURNAL" not in ok.line()
    assert not full.healthy
    assert "JOURNAL NOT WRITABLE (OperationalError: database or disk is full)" in full.line()


def test_a_hung_monitor_costs_callers_nothing_and_the_queue_stays_bounded():
    with FakeServer() as mon:
        mon.route("POST", HEARTBEAT, hang)
        mon.route("POST", LOGS, hang)
        config = MonitorConfig(enabled=True, url=mon.url, timeout_seconds=1.0, queue_limit=5)
        monitor = Monitor(config, instance="i", namespace="prodops", token=None,
                          snapshot=snapshot)
        monitor.start()
        wait_until(lambda: mon.requests_to("POST", HEARTBEAT))  # the thread is now stuck
        end = JobEnd(job_id="j", msg_type="submit_task", status="unrecorded", duration=1.5,
                     reason="record failed", echo={"task_name": "t1"}, action="task_submit")
        started = time.perf_counter()
        for _ in range(200):
            monitor.job_ended(end)
        took = time.perf_counter() - started
        assert took < 0.05, f"200 records took {took:.3f} s to hand over"
        assert monitor.dropped >= 195
        started = time.monotonic()
        monitor.stop()
        assert time.monotonic() - started < 2 * config.timeout_seconds + 1.5
    record = monitor.action_record(end)
    assert record["funcname"] == "task_submit" and record["levelname"] == "WARNING"
    assert record["extra_data"]["outcome"] == "unrecorded"
    assert record["extra_data"]["task_name"] == "t1"
    # a capability's declared action id names its records; else its msg_type does
    declared = JobEnd(job_id="k", msg_type="campaign_provenance_sweep", status="ok",
                      duration=1.0, action="provenance_sweep")
    assert monitor.action_record(declared)["funcname"] == "provenance_sweep"
    assert monitor.action_record(declared)["extra_data"]["action"] == "provenance_sweep"
    plain = JobEnd(job_id="l", msg_type="ops_work", status="ok", duration=1.0)
    assert monitor.action_record(plain)["funcname"] == "ops_work"


def test_monitor_configuration_is_checked():
    with pytest.raises(ValueError, match="enabled but no url"):
        MonitorConfig(enabled=True, url="", http_url="")
    with pytest.raises(ValueError, match="at least every 60 s"):
        MonitorConfig(heartbeat_seconds=120)


def latencies(caller, n: int) -> tuple[list[float], list[float]]:
    """(ping round trips, job round trips)."""
    pings, jobs = [], []
    for i in range(n):
        # A finished job puts an action-log record on the monitor's queue.
        started = time.perf_counter()
        caller.wait_event(caller.send("test_echo", {"text": f"job {i}"}))
        jobs.append(time.perf_counter() - started)
        # Past the caller's delayed ACK of the event (the test broker does not set
        # TCP_NODELAY: a ping right behind a job's event waits ~40 ms either way).
        time.sleep(0.06)
        started = time.perf_counter()
        rid = caller.send("health_ping", {})
        caller.wait_reply(lambda r, rid=rid: r.get("request_id") == rid, timeout=10)
        pings.append(time.perf_counter() - started)
    return pings, jobs


@pytest.mark.broker
def test_a_hung_monitor_never_slows_a_ping(host_factory, caller_for):
    with FakeServer() as mon:
        mon.route("POST", HEARTBEAT, hang)
        mon.route("POST", LOGS, hang)
        plain = host_factory(name="plain").start()
        hung = host_factory(name="hung", extra={"monitor": {
            "enabled": True, "url": mon.url, "heartbeat_seconds": 1, "timeout_seconds": 2,
            "queue_limit": 10}}).start()
        base, _ = latencies(caller_for(plain), 30)
        slow, jobs = latencies(caller_for(hung), 30)
        # The monitor was asked, and never answered.
        assert mon.requests_to("POST", HEARTBEAT) and mon.requests_to("POST", LOGS)
    p50_base, p50_slow = statistics.median(base), statistics.median(slow)
    print(f"ping p50 {p50_base * 1000:.2f} ms without a monitor, {p50_slow * 1000:.2f} ms "
          f"with a hung one (max {max(slow) * 1000:.2f} ms)")
    assert p50_slow <= max(3 * p50_base, p50_base + 0.005)
    assert max(slow) < 0.5, "a ping waited behind a monitor post (timeout 2 s)"
    # Nor does a job's end wait for its action-log record (test_echo runs two at a time).
    assert max(jobs) < 1.0, f"a job took {max(jobs):.3f} s with the monitor hung"


def test_it_registers_as_the_old_agent_did_subscriber_and_numbered_name(opsagent_harness):
    """BaseAgent at start: an id from /api/state/next-agent-id/, the name
    ``prodops-agent-<user>-<id>``, and ``<name>-<queue>`` at /api/subscribers/."""
    import pwd

    with FakeServer() as mon:
        mon.route("POST", "/api/state/next-agent-id/",
                  Response.json({"status": "success", "agent_id": 417}))
        mon.route("POST", "/api/subscribers/",
                  Response.json({"subscriber_name": "x"}, 201))
        mon.route("POST", HEARTBEAT, Response.json({"ok": True}, 201))
        opsagent_harness(modules=[opscaps], config={
            "monitor": {"enabled": True, "url": mon.url, "heartbeat_seconds": 0.2,
                        "numbered_instance": True}})
        wait_until(lambda: bodies(mon, HEARTBEAT))
        name = f"prodops-agent-{pwd.getpwuid(os.geteuid()).pw_name}-417"
        assert {b["instance_name"] for b in bodies(mon, HEARTBEAT)} == {name}
        (sub,) = bodies(mon, "/api/subscribers/")
        assert sub == {"subscriber_name": f"{name}-/queue/epicprod.ops",
                       "description": "PRODOPS agent subscribing to /queue/epicprod.ops",
                       "is_active": True, "fraction": 1.0}


def test_an_existing_subscriber_or_no_agent_id_keeps_the_configured_name(opsagent_harness):
    with FakeServer() as mon:
        mon.route("POST", "/api/state/next-agent-id/", Response.json({"error": "db"}, 500))
        mon.route("POST", "/api/subscribers/",
                  Response.json({"subscriber_name": ["subscriber already exists"]}, 400))
        mon.route("POST", HEARTBEAT, Response.json({"ok": True}, 201))
        h = opsagent_harness(modules=[opscaps], config={
            "host": {"instance": "ops-test"},
            "monitor": {"enabled": True, "url": mon.url, "heartbeat_seconds": 0.2,
                        "numbered_instance": True}})
        wait_until(lambda: bodies(mon, HEARTBEAT))
        assert bodies(mon, HEARTBEAT)[0]["instance_name"] == "ops-test"
        assert bodies(mon, "/api/subscribers/")[0]["subscriber_name"] == (
            "ops-test-/queue/epicprod.ops")
        assert h.ping()["msg_type"] == "pong"
