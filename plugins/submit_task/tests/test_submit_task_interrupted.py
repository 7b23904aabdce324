"""Never twice when the job dies after PanDA accepted the task: the id is noted the moment
prun prints it, and a job cut short without an id asks PanDA before it could submit again.

The jobs here are real processes (``opsagent.testing.start_job_process``, as the host runs
them) with a real journal, SIGKILLed as a whole process group; prun is either the real one against
the fake PanDA server or a stand-in that prints an id and lingers.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from opsagent.testing import (
    MemoryNotes,
    Response,
    call_doer,
    journal_notes,
    processes_with_env,
    structure,
)
from opsagent_submit_task import SubmitInput
from opsagent_submit_task.submit import NOTE_ID, NOTE_PANDA_NAME
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import (
    CAPABILITY,
    TASK,
    OperatorToken,
    config_table,
    make_config,
    make_job,
    prun_mark,
    start_job_process,
    wait_until,
)

#: A prun that does what the real one does with the token, prints the id PanDA gave, and
#: then lingers (uploading a log, a slow server...) -- only the first time it is run.
LINGERING_PRUN = """\
import os, sys, time
from pathlib import Path
log = Path(os.environ["FAKE_PRUN_LOG"])
with log.open("a") as f:
    f.write(f"{os.getpid()} {' '.join(sys.argv[1:])}\\n")
first = len(log.read_text().splitlines()) == 1
Path(os.environ["PANDA_CONFIG_ROOT"], ".token").read_bytes()
print("INFO : submit " + sys.argv[sys.argv.index("--outDS") + 1], flush=True)
print("INFO : succeeded. new jediTaskID=4242", flush=True)
if first:
    time.sleep(120)
"""


@pytest.fixture
def lingering_prun(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``(panda_sys, invocation log)`` of the lingering prun; its processes die after."""
    panda_sys = tmp_path / "panda-sys"
    (panda_sys / "bin").mkdir(parents=True)
    prun = panda_sys / "bin" / "prun"
    prun.write_text(f"#!{sys.executable}\n{LINGERING_PRUN}")
    prun.chmod(0o755)
    log = tmp_path / "prun.log"
    yield panda_sys, log
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _note(tmp_path: Path, key: str) -> str | None:
    return journal_notes(tmp_path / "state" / "journal.sqlite3").get_note("req-7", key)


def test_an_id_printed_before_the_job_is_killed_is_recorded_and_prun_is_not_run_again(
    pcs: FakeCatalogue,
    operator_token: OperatorToken,
    panda: FakePanda,
    lingering_prun: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    panda_sys, log = lingering_prun
    table = config_table(
        pcs,
        panda,
        panda_sys=str(panda_sys),
        panda_env={**panda.env(), "FAKE_PRUN_LOG": str(log)},
    )
    first = start_job_process(tmp_path, table, operator_token.path)
    # Noted while prun still runs: not when it exits.
    assert wait_until("the jediTaskID noted", lambda: _note(tmp_path, NOTE_ID)) == "4242"
    first.kill9()
    assert pcs.tasks[TASK]["panda_task_id"] is None  # killed before the record

    second = start_job_process(tmp_path, table, operator_token.path, attempt=2, interrupted=True)
    outcome = second.outcome()

    assert outcome["status"] == "ok", outcome
    assert outcome["data"] == {"jedi_task_id": "4242", "resumed": True}
    assert len(log.read_text().splitlines()) == 1  # prun ran once
    assert pcs.tasks[TASK]["panda_task_id"] == 4242
    assert pcs.tasks[TASK]["recorded_by"] == "alice"


def test_a_job_killed_before_the_id_came_asks_panda_and_records_the_task_it_has(
    pcs: FakeCatalogue, operator_token: OperatorToken, panda: FakePanda, tmp_path: Path
) -> None:
    # PanDA registers the task, and the job dies before its answer arrives.
    panda.hang_after_accept = True
    table = config_table(pcs, panda)
    first = start_job_process(tmp_path, table, operator_token.path)
    wait_until("PanDA to have the task", lambda: panda.tasks)
    assert _note(tmp_path, NOTE_PANDA_NAME) == TASK + "/"
    first.kill9()
    for pid in processes_with_env(prun_mark(panda)):  # as the restarted host does
        os.kill(pid, signal.SIGKILL)
    assert _note(tmp_path, NOTE_ID) is None

    second = start_job_process(tmp_path, table, operator_token.path, attempt=2, interrupted=True)
    outcome = second.outcome()

    assert outcome["status"] == "ok", outcome
    assert outcome["data"] == {"jedi_task_id": "41000", "resumed": True}
    assert len(panda.submit_requests) == 1 and len(panda.tasks) == 1
    (asked,) = panda.lookup_requests
    assert json.loads(asked.arg("filters") or "") == {"taskName": TASK + "/"}
    assert asked.arg("since") is None  # tasks of any age
    assert pcs.tasks[TASK]["panda_task_id"] == 41000
    assert _note(tmp_path, NOTE_ID) == "41000"


def _cut_short(notes: MemoryNotes, job_id: str = "job-0001") -> None:
    """What a job killed while prun ran leaves in its notes: the name, no id."""
    notes.put_note(job_id, NOTE_PANDA_NAME, TASK + "/")


def test_when_panda_cannot_be_asked_the_job_ends_in_error_and_nothing_is_submitted(
    pcs: FakeCatalogue, operator_token: OperatorToken, panda: FakePanda, cache: Path
) -> None:
    panda.lookup_failure = Response.json(
        {"success": False, "message": "database unavailable", "data": None}, 500
    )
    notes = MemoryNotes()
    _cut_short(notes)
    job = make_job(cache, operator_token.path, make_config(pcs, panda), notes=notes)
    job = attrs.evolve(job, attempt=2, interrupted=True)

    outcome = call_doer(CAPABILITY, structure({"task_name": TASK}, SubmitInput), job)

    assert outcome.status == "error"
    assert "may have been submitted; check PanDA" in (outcome.reason or "")
    assert f"a task named '{TASK}/'" in (outcome.reason or "")
    assert len(panda.lookup_requests) == 1
    assert panda.submit_requests == [] and pcs.record_requests == []
    assert operator_token.id_token not in (outcome.reason or "")


def test_when_panda_has_no_such_task_it_is_submitted_once(
    pcs: FakeCatalogue, operator_token: OperatorToken, panda: FakePanda, cache: Path
) -> None:
    notes = MemoryNotes()
    _cut_short(notes)
    job = make_job(cache, operator_token.path, make_config(pcs, panda), notes=notes)
    job = attrs.evolve(job, attempt=2, interrupted=True)

    outcome = call_doer(CAPABILITY, structure({"task_name": TASK}, SubmitInput), job)

    assert (outcome.status, outcome.data) == ("ok", {"jedi_task_id": "41000"})
    assert len(panda.lookup_requests) == 1 and len(panda.submit_requests) == 1
    assert pcs.tasks[TASK]["panda_task_id"] == 41000


def test_an_attempt_that_timed_out_is_looked_up_before_prun_runs_again(
    pcs: FakeCatalogue, operator_token: OperatorToken, panda: FakePanda, cache: Path
) -> None:
    # Not interrupted (the first attempt ended with a timeout), but prun had started.
    panda.hang_after_accept = True
    notes = MemoryNotes()
    config = make_config(pcs, panda, prun_timeout=3.0, kill_grace=0.5)
    job = make_job(cache, operator_token.path, config, notes=notes)
    inp = structure({"task_name": TASK}, SubmitInput)
    assert call_doer(CAPABILITY, inp, job).status == "timeout"

    panda.hang_after_accept = False
    outcome = call_doer(CAPABILITY, inp, attrs.evolve(job, attempt=2))

    assert (outcome.status, outcome.data) == ("ok", {"jedi_task_id": "41000", "resumed": True})
    assert len(panda.submit_requests) == 1
    assert processes_with_env(prun_mark(panda)) == []
