"""Chains on a real host and the real broker: each step a job of its own (journaled,
deduplicated, time-limited, its own event and action record), a summary that counts a
step's non-zero exit as a failure, and a chain that resumes after its host was killed."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from opsagent.isolation import proc
from opsagent.testing import FakeServer, Response
from support import OPSAGENT, SITECAPS, SITECHAIN

pytestmark = pytest.mark.broker

SITES = (SITECAPS, SITECHAIN)
LOGS = "/api/logs/"
HEARTBEAT = "/api/systemagents/heartbeat/"


def wait_until(pred, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"{what} not met within {timeout} s"
        time.sleep(0.05)


def runs(host, name: str) -> list[list[str]]:
    path = host.tmp / "cache" / "chain-runs" / f"{name}.runs"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def journal(host, job_id: str) -> tuple[str, int] | None:
    db = sqlite3.connect(host.tmp / "state" / "journal.sqlite3")
    try:
        return db.execute("SELECT state, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        db.close()


def monitor() -> FakeServer:
    mon = FakeServer()
    mon.route("POST", HEARTBEAT, Response.json({"ok": True}, 201))
    mon.route("POST", LOGS, Response.json({"ok": True}, 201))
    return mon.start()


def records(mon: FakeServer) -> list[dict]:
    return [r.json() for r in mon.requests_to("POST", LOGS)]


def test_a_failing_step_fails_the_chain_and_the_steps_after_it_still_run(host_factory,
                                                                         caller_for):
    with monitor() as mon:
        host = host_factory(paths=SITES, extra={"monitor": {"enabled": True, "url": mon.url}})
        host.start()
        caller = caller_for(host)
        rid = caller.send("test_chain_failing", {"created_by": "nightly"}, reply=False)
        event = caller.wait_event(rid, timeout=60)
        assert event["msg_type"] == "test_chain_failing_failed", event
        assert (event["ok"], event["outcome"]) == (False, "error")
        assert event["error"] == "step(s) failed: step_b"
        assert (event["steps"], event["failed"], event["skipped"]) == (3, ["step_b"], [])
        assert [r["outcome"] for r in event["results"]] == ["ok", "error", "ok"]
        # Each step was a job of its own, with its own event on the topic.
        a, b, c = (caller.wait_event(f"{rid}/{n}.step_{x}") for n, x in
                   ((1, "a"), (2, "b"), (3, "c")))
        assert (a["msg_type"], a["ok"], a["chain"], a["chain_job_id"]) == (
            "test_step_done", True, "test_chain_failing", rid)
        assert b["msg_type"] == "test_step_failed" and b["outcome"] == "error"
        # The program's non-zero exit, with the line that says why.
        assert b["error"].startswith("rc=3: ") and "failed on purpose" in b["error"]
        assert c["ok"] is True
        # Once each, with the chain's created_by passed to the step that takes it.
        assert [runs(host, n) for n in "abc"] == [
            [[f"{rid}/1.step_a", "1", "nightly"]], [[f"{rid}/2.step_b", "1", "nightly"]],
            [[f"{rid}/3.step_c", "1", "nightly"]]]
        for n, x in ((1, "a"), (2, "b"), (3, "c")):
            assert journal(host, f"{rid}/{n}.step_{x}") == ("finished", 1)
        # Four action records: one per step, then the chain's summary.
        wait_until(lambda: len(records(mon)) == 4, what="four action records")
        by_job = {r["extra_data"]["job_id"]: r for r in records(mon)}
        step_b = by_job[f"{rid}/2.step_b"]
        assert step_b["funcname"] == "test_step" and step_b["levelname"] == "ERROR"
        assert step_b["extra_data"]["subject_type"] == "test_step"
        assert step_b["extra_data"]["subject_key"] == "b"
        assert step_b["extra_data"]["username"] == "nightly"
        assert step_b["message"].startswith("test_step test_step:b error — rc=3: ")
        summary = by_job[rid]
        assert summary["funcname"] == "test_chain_failing"
        extra = summary["extra_data"]
        assert (extra["action"], extra["outcome"], extra["steps"], extra["failed"]) == (
            "test_chain_failing", "error", 3, ["step_b"])
        assert extra["raised"] == ["step_b"] and extra["username"] == "nightly"
        assert (extra["sublevel"], extra["live_default"]) == ("high", True)
        assert summary["message"] == (
            "test_chain_failing error — step(s) failed: step_b")


def test_a_hanging_step_is_killed_at_its_time_limit_and_the_chain_goes_on(host_factory,
                                                                          caller_for):
    host = host_factory(paths=SITES, extra={"capability.test_step": {"time_limit": 2}})
    host.start()
    caller = caller_for(host)
    started = time.monotonic()
    rid = caller.send("test_chain_hanging", reply=False)
    event = caller.wait_event(rid, timeout=60)
    assert event["failed"] == ["step_b"] and event["outcome"] == "error"
    hung = caller.wait_event(f"{rid}/2.step_b")
    assert hung["outcome"] == "timeout"
    assert "did not finish within its time limit of 2 s" in hung["error"]
    assert caller.wait_event(f"{rid}/3.step_c")["ok"] is True
    assert time.monotonic() - started < 30
    # The hanging program went with its job's process group.
    assert proc.marked(str((host.tmp / "state").resolve())) == {}


def test_a_chain_whose_host_is_killed_mid_step_resumes_at_that_step(host_factory,
                                                                    caller_for):
    host = host_factory(paths=SITES).start()
    caller = caller_for(host)
    rid = caller.send("test_chain_waiting", reply=False)
    # Step a has ended (its end recorded), step b's program is waiting for its release.
    caller.wait_event(f"{rid}/1.step_a", timeout=30)
    wait_until(lambda: journal(host, f"{rid}/1.step_a") == ("finished", 1))
    wait_until(lambda: runs(host, "b"), what="step b started")
    host.kill9()
    assert runs(host, "c") == []
    release = host.tmp / "cache" / "chain-runs" / "b.release"
    release.write_text("")
    host.start(wait=False)
    host.wait_log("subscribed to", count=2, timeout=30)
    event = caller.wait_event(rid, timeout=60)
    assert event["outcome"] == "ok", event
    assert (event["steps"], event["failed"]) == (3, [])
    # Step a is not run again; step b, cut short, runs again (attempt 2); c once.
    assert runs(host, "a") == [[f"{rid}/1.step_a", "1", "None"]]
    assert [r[:2] for r in runs(host, "b")] == [[f"{rid}/2.step_b", "1"],
                                               [f"{rid}/2.step_b", "2"]]
    assert [r[:2] for r in runs(host, "c")] == [[f"{rid}/3.step_c", "1"]]
    assert f"chain step {rid}/1.step_a ended ok before; not run again" in host.text()
    wait_until(lambda: journal(host, rid) == ("finished", 2), what="chain recorded")


def test_a_step_whose_work_a_request_is_already_doing_is_skipped(host_factory, caller_for):
    host = host_factory(paths=SITES).start()
    caller = caller_for(host)
    manual = caller.send("test_step", {"name": "b", "mode": "wait"}, reply=False)
    wait_until(lambda: runs(host, "b"), what="the manual request started")
    rid = caller.send("test_chain", reply=False)
    event = caller.wait_event(rid, timeout=60)
    assert event["outcome"] == "ok" and event["skipped"] == ["step_b"], event
    step_b = caller.wait_event(f"{rid}/2.step_b")
    assert step_b["outcome"] == "skipped" and step_b["ok"] is True
    assert f"job {manual} with the same key (test_step:b) is in flight" in step_b["reason"]
    (host.tmp / "cache" / "chain-runs" / "b.release").write_text("")
    assert caller.wait_event(manual)["outcome"] == "ok"
    assert len(runs(host, "b")) == 1


def test_a_step_that_cannot_run_still_ends_as_a_step_of_its_own(host_factory, caller_for):
    with monitor() as mon:
        host = host_factory(paths=SITES, extra={"monitor": {"enabled": True, "url": mon.url}})
        host.start()
        caller = caller_for(host)
        rid = caller.send("test_chain_locked", reply=False)
        event = caller.wait_event(rid, timeout=60)
        assert event["failed"] == ["step_locked"] and event["outcome"] == "error", event
        # Not run, yet journaled, announced and recorded like any step.
        locked = caller.wait_event(f"{rid}/2.step_locked")
        assert locked["msg_type"] == "test_locked_step_failed" and locked["ok"] is False
        assert locked["error"].startswith("not run: test_locked_step is unavailable: ")
        assert "test_absent_token" in locked["error"]
        assert locked["chain_job_id"] == rid
        assert journal(host, f"{rid}/2.step_locked") == ("finished", 1)
        assert runs(host, "l") == [] and len(runs(host, "c")) == 1
        wait_until(lambda: any(r["extra_data"].get("job_id") == f"{rid}/2.step_locked"
                               for r in records(mon)), what="the step's record")


def test_a_step_input_the_step_refuses_fails_the_chain_before_any_step(host_factory,
                                                                        caller_for):
    host = host_factory(paths=SITES).start()
    caller = caller_for(host)
    rid = caller.send("test_chain", {"created_by": "--all; rm -rf /"}, reply=False)
    event = caller.wait_event(rid, timeout=30)
    assert event["outcome"] == "error"
    assert event["error"].startswith("invalid input for step step_a (test_step): $.created_by")
    assert not (host.tmp / "cache" / "chain-runs").exists()


CONFIG_CHAINS = """
[[chain]]
msg_type = "test_config_chain"
events = {ok = "test_config_chain_done", error = "test_config_chain_failed"}
steps = [
  {msg_type = "test_step", name = "step_a", input = {name = "a"}},
  {msg_type = "test_step", name = "step_b", input = {name = "b", mode = "fail"}},
  {msg_type = "test_step", name = "step_c", input = {name = "c"}},
]

[[chain]]
msg_type = "test_broken_chain"
steps = [{msg_type = "Not-A-Type"}]
"""


def test_a_chain_declared_in_the_config_behaves_as_a_packaged_one(host_factory, caller_for):
    host = host_factory(paths=SITES)
    Path(host.config).write_text(Path(host.config).read_text() + CONFIG_CHAINS)
    host.start()
    caller = caller_for(host)
    packaged = caller.wait_event(caller.send("test_chain_failing", reply=False), timeout=60)
    declared = caller.wait_event(caller.send("test_config_chain", reply=False), timeout=60)
    assert declared["msg_type"] == "test_config_chain_failed"
    strip = ("msg_type", "request", "job_id", "request_id", "results")
    assert {k: v for k, v in declared.items() if k not in strip} == {
        k: v for k, v in packaged.items() if k not in strip}
    # The broken one is shown as broken; the host started with the rest.
    assert "plugin test_broken_chain ([[chain]] " in host.text()
    listed = subprocess.run([*OPSAGENT, "--config", str(host.config), "plugins", "--json"],
                            capture_output=True, text=True, env=host.env, timeout=60)
    assert "test_config_chain" in listed.stdout and "test_broken_chain" in listed.stdout
    rid = caller.send("test_broken_chain")
    rejected = caller.wait_event(rid)
    assert rejected["code"] == "unavailable"
    assert "'Not-A-Type' is not a msg_type" in rejected["reason"]
