"""``Capability.reconcile``: a job that may have been interrupted is looked at before its
doer could run a second time (the one code path, :func:`opsagent.isolation.execute.call`)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from opsagent import Capability, Job, JobFailed, Outcome
from opsagent.host.journal import Journal
from opsagent.isolation.execute import call


@attrs.frozen
class In:
    n: str = "1"


def _cap(reconcile, ran: list[str]) -> Capability:
    def doer(inp: In, job: Job) -> Outcome:
        ran.append(inp.n)
        return Outcome.ok(ran=True)

    return Capability(msg_type="thing", input=In, doer=doer, reconcile=reconcile,
                      events={"ok": "thing_done", "error": "thing_failed"})


def _job(tmp_path: Path, interrupted: bool) -> Job:
    return Job(id="j1", msg_type="thing", cache_dir=tmp_path, time_limit=5,
               attempt=2 if interrupted else 1, interrupted=interrupted)


def test_an_effect_that_happened_ends_the_job_without_the_doer(tmp_path):
    ran: list[str] = []
    seen: list[Job] = []

    def reconcile(inp: In, job: Job) -> Outcome:
        seen.append(job)
        return Outcome.ok(found=inp.n)

    out = call(_cap(reconcile, ran), In("7"), _job(tmp_path, True))
    assert (out.status, out.data) == ("ok", {"found": "7"})
    assert ran == [] and seen[0].attempt == 2


def test_no_effect_found_runs_the_doer(tmp_path):
    ran: list[str] = []
    out = call(_cap(lambda inp, job: None, ran), In("7"), _job(tmp_path, True))
    assert out.data == {"ran": True} and ran == ["7"]


def test_a_job_not_interrupted_is_not_reconciled(tmp_path):
    ran: list[str] = []

    def reconcile(inp: In, job: Job) -> Outcome:
        raise AssertionError("called for a first run")

    out = call(_cap(reconcile, ran), In("7"), _job(tmp_path, False))
    assert out.status == "ok" and ran == ["7"]


@pytest.mark.parametrize("raised, reason", [
    (RuntimeError("catalogue down"),
     "thing may have been interrupted and the check whether it had already taken effect "
     "failed (RuntimeError: catalogue down); it was not run again"),
    (JobFailed("task state unknown: ask PanDA"), "task state unknown: ask PanDA"),
])
def test_a_check_that_fails_is_an_error_and_the_doer_does_not_run(tmp_path, raised, reason):
    ran: list[str] = []

    def reconcile(inp: In, job: Job) -> Outcome:
        raise raised

    out = call(_cap(reconcile, ran), In("7"), _job(tmp_path, True))
    assert out.status == "error" and reason in (out.reason or "")
    assert ran == []


def test_a_check_returning_something_else_is_a_plugin_bug(tmp_path):
    ran: list[str] = []
    out = call(_cap(lambda inp, job: True, ran), In("7"), _job(tmp_path, True))
    assert out.status == "error" and "returned bool, not an Outcome" in (out.reason or "")
    assert ran == []


def test_a_started_job_is_running_after_a_restart_and_counts_its_attempts(tmp_path):
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    j.accept("a", "thing", None, {"n": "1"})
    j.accept("b", "thing", None, {"n": "2"})
    j.start("a")  # commits both acceptances with the start
    j.close()
    again = Journal(path)  # what a restarted host sees
    a = again.accept("a", "thing", None, {"n": "1"})
    b = again.accept("b", "thing", None, {"n": "2"})
    assert (a.state, a.attempts) == ("running", 2)
    assert (b.state, b.attempts) == ("accepted", 2)
    again.commit()
    # Still running (it may have been interrupted) until it finishes.
    assert again.accept("a", "thing", None, {}).state == "running"
    again.finish("a", Outcome.ok())
    assert again.accept("a", "thing", None, {}).state == "finished"
    again.close()
