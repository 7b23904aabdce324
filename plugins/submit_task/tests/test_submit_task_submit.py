"""submit_task end to end: the real prun against a faithful PanDA fake and catalogue fake.

Every test here also checks, through its fixtures, that the operator's token file keeps
its bytes and mtime and that no sandbox is left under ``<cache>/submit/``.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path

import pytest
from opsagent import JobFailed, Outcome
from opsagent.testing import MemoryNotes, Response, processes_with_env, structure
from opsagent_submit_task import SubmitInput
from opsagent_submit_task.submit import NOTE_ID, submit
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import (
    TASK,
    OperatorToken,
    job_env,
    make_config,
    make_job,
    prun_mark,
)


def inp(owner: str | None = "alice") -> SubmitInput:
    return structure({"task_name": TASK, "owner": owner}, SubmitInput)


def test_success_submits_once_with_the_operator_token_and_records_the_id(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    notes = MemoryNotes()
    # Variables that would make panda-client bypass the token copy must not reach prun.
    env = job_env(PANDA_AUTH_ID_TOKEN="bogus", OIDC_AUTH_TOKEN_FILE="/nonexistent")
    job = make_job(cache, operator_token.path, make_config(pcs, panda), notes=notes, env=env)

    outcome = submit(inp(), job)

    assert outcome == Outcome.ok(jedi_task_id="41000")
    assert [t["jediTaskID"] for t in panda.tasks] == [41000]
    task = panda.tasks[0]
    assert task["user"] == "Ops Operator"  # authenticated with the operator's id token
    assert task["params"]["taskName"] == TASK + "/"
    assert task["params"]["prodSourceLabel"] == "test"
    # The uploaded sandbox is the empty working directory: no token, nothing else.
    (sandbox,) = panda.files.values()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(sandbox["content"]))) as tar:
        assert tar.getnames() == []
    assert [r.path.rsplit("/", 2)[-2:] for r in panda.server.requests] == [
        ["file_server", "validate_cache_file"],
        ["file_server", "upload_cache_file"],
        ["task", "submit"],
    ]
    # Recorded in the catalogue as the owner, and noted with the job first.
    assert pcs.tasks[TASK]["panda_task_id"] == 41000
    assert pcs.tasks[TASK]["status"] == "submitted"
    assert pcs.tasks[TASK]["recorded_by"] == "alice"
    (rec,) = pcs.record_requests
    assert rec.json() == {"jedi_task_id": 41000}
    assert notes.get_note(job.id, NOTE_ID) == "41000"


def test_a_task_the_catalogue_already_records_is_not_submitted_again(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    pcs.tasks[TASK]["panda_task_id"] = 777
    job = make_job(cache, operator_token.path, make_config(pcs, panda))

    outcome = submit(inp(), job)

    assert outcome == Outcome.ok(jedi_task_id="777", already_submitted=True)
    assert panda.server.requests == []
    assert pcs.requests("GET", "/pcs/api/prod-tasks/command/") == []
    assert pcs.record_requests == []


def test_an_id_noted_by_an_earlier_attempt_is_recorded_instead_of_running_prun(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    notes = MemoryNotes()
    notes.put_note("job-0001", NOTE_ID, "5150")
    job = make_job(cache, operator_token.path, make_config(pcs, panda), notes=notes)

    outcome = submit(inp(), job)

    assert outcome == Outcome.ok(jedi_task_id="5150", resumed=True)
    assert panda.server.requests == []
    assert pcs.tasks[TASK]["panda_task_id"] == 5150


def test_when_the_catalogue_cannot_say_whether_it_was_submitted_nothing_is_submitted(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    pcs.server.route(
        "GET", "/pcs/api/prod-tasks/<name>/", Response.json({"detail": "database is locked"}, 500)
    )
    job = make_job(cache, operator_token.path, make_config(pcs, panda))

    with pytest.raises(JobFailed, match=r"HTTP 500.*nothing was submitted"):
        submit(inp(), job)
    assert panda.server.requests == []


def test_prun_failure_puts_prun_diagnostics_in_the_reason(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    # Without --official a group.* output dataset is refused by prun itself.
    pcs.tasks[TASK]["panda_command"] = f"prun --exec ./run.sh --outDS {TASK} --noBuild"
    notes = MemoryNotes()
    job = make_job(cache, operator_token.path, make_config(pcs, panda), notes=notes)

    with pytest.raises(JobFailed) as info:
        submit(inp(), job)

    reason = info.value.reason
    assert "prun failed with exit status 10" in reason
    assert "outDS must be 'user.opsop." in reason  # prun's own words
    assert panda.tasks == []
    assert pcs.record_requests == []
    assert notes.get_note(job.id, NOTE_ID) is None


def test_panda_refusing_the_task_is_a_failure_with_the_server_message(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    panda.submit_behaviour = (4, "server error: JEDI is in maintenance")
    job = make_job(cache, operator_token.path, make_config(pcs, panda))

    with pytest.raises(
        JobFailed,
        match=r"(?s)exit status 90 .*"
        r"task submission failed\. server error: JEDI is in maintenance",
    ):
        submit(inp(), job)
    assert pcs.record_requests == []


def test_no_id_in_prun_output_is_a_failure_and_nothing_is_recorded(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    panda.accept_message = "succeeded. task accepted"
    job = make_job(cache, operator_token.path, make_config(pcs, panda))

    with pytest.raises(JobFailed, match="exited 0 but printed no jediTaskID"):
        submit(inp(), job)
    assert pcs.record_requests == []
    assert pcs.tasks[TASK]["panda_task_id"] is None


def test_record_that_fails_then_succeeds_is_retried_with_backoff(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    pcs.record_plan = [503, 502]
    job = make_job(cache, operator_token.path, make_config(pcs, panda, record_backoff=0.2))

    outcome = submit(inp(), job)

    assert outcome == Outcome.ok(jedi_task_id="41000")
    times = [r.received for r in pcs.record_requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.4  # doubling backoff
    assert pcs.tasks[TASK]["panda_task_id"] == 41000
    assert len(panda.tasks) == 1


def test_record_that_fails_every_time_is_unrecorded_and_carries_the_id(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    pcs.record_plan = [503, 503, 503, 503]
    notes = MemoryNotes()
    job = make_job(cache, operator_token.path, make_config(pcs, panda), notes=notes)

    outcome = submit(inp(), job)

    assert outcome.status == "unrecorded"
    assert outcome.data == {"jedi_task_id": "41000"}
    assert "PanDA task 41000 WAS submitted" in (outcome.reason or "")
    assert "3 tries" in (outcome.reason or "")
    assert "record-submission/?name=" + TASK in (outcome.reason or "")
    assert len(pcs.record_requests) == 3
    assert pcs.record_plan == [503]
    assert notes.get_note(job.id, NOTE_ID) == "41000"


def test_a_conflicting_id_in_the_catalogue_is_not_retried(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    # Someone records another id between our check and our record.
    original = pcs._record

    def racing(req):  # type: ignore[no-untyped-def]
        pcs.tasks[TASK]["panda_task_id"] = 999
        return original(req)

    pcs.server.route("POST", "/pcs/api/prod-tasks/record-submission/", racing)
    job = make_job(cache, operator_token.path, make_config(pcs, panda))

    outcome = submit(inp(), job)

    assert outcome.status == "unrecorded"
    assert "HTTP 409" in (outcome.reason or "") and "1 try" in (outcome.reason or "")
    assert len(pcs.record_requests) == 1


def test_the_pcs_token_authenticates_the_record_when_localhost_is_not_trusted(
    panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    from submit_task_support import COMMAND

    with FakeCatalogue(trust_localhost=False, tokens=("pcs-secret",)) as pcs:
        pcs.add_task(TASK, COMMAND)
        job = make_job(cache, operator_token.path, make_config(pcs, panda), pcs_token="pcs-secret")
        assert submit(inp(owner=None), job) == Outcome.ok(jedi_task_id="41000")
        assert pcs.record_requests[0].header("Authorization") == "Token pcs-secret"
        assert pcs.record_requests[0].header("X-Remote-User") is None

        # Without the token the catalogue refuses, and retrying cannot help.
        pcs.tasks[TASK]["panda_task_id"] = None
        job = make_job(cache, operator_token.path, make_config(pcs, panda), job_id="job-2")
        panda.tasks.clear()
        outcome = submit(inp(owner=None), job)
        assert outcome.status == "unrecorded"
        assert "HTTP 403" in (outcome.reason or "")
        assert "pcs-secret" not in (outcome.reason or "")


def test_a_hanging_panda_server_times_out_and_leaves_no_process_behind(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    panda.submit_behaviour = "hang"
    job = make_job(
        cache, operator_token.path, make_config(pcs, panda, prun_timeout=2.0, kill_grace=0.5)
    )

    started = time.monotonic()
    outcome = submit(inp(), job)
    elapsed = time.monotonic() - started

    assert outcome.status == "timeout"
    assert "did not finish within 2 s" in (outcome.reason or "")
    assert "INFO : submit " + TASK in (outcome.reason or "")  # prun's output so far
    assert elapsed < 8
    assert len(panda.submit_requests) == 1  # prun was really waiting on the server
    # prun and everything it started are gone.
    assert processes_with_env(prun_mark(panda)) == []
    assert pcs.record_requests == []


def test_the_job_time_limit_must_cover_the_inner_budgets(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    job = make_job(cache, operator_token.path, make_config(pcs, panda), time_limit=20)
    with pytest.raises(JobFailed, match=r"time limit 20 s is not longer than .* = 54\.15 s"):
        submit(inp(), job)
    assert panda.server.requests == [] and pcs.server.requests == []


def test_a_hostile_request_id_cannot_make_the_cleanup_remove_the_cache(
    pcs: FakeCatalogue, panda: FakePanda, operator_token: OperatorToken, cache: Path
) -> None:
    precious = cache / "panda-logs" / "1" / "2" / ".done"
    precious.parent.mkdir(parents=True)
    precious.write_text("payload.stdout\n")
    job = make_job(cache, operator_token.path, make_config(pcs, panda), job_id="..")

    assert submit(inp(), job) == Outcome.ok(jedi_task_id="41000")
    assert precious.read_text() == "payload.stdout\n"
