"""submit_evgen_task with the real panda-client against the fake PanDA server and the fake
catalogue: the sandbox, the task parameters, the record, the failures, never twice."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import attrs
import opsagent_panda_ops
import pytest
from opsagent import Credential, testing
from opsagent.testing import FakeMonitor, FakePanda, journal_notes, processes_with_env
from panda_ops_support import MARK

EVGEN = testing.declared(opsagent_panda_ops)["submit_evgen_task"]
SUBMIT_TASK = "group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1"
OUT_DS = "group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1.evgen"


def spec(**over: Any) -> dict[str, Any]:
    return {
        "outDS": OUT_DS,
        "csvBase": "dis_18x275",
        "csvRows": [
            "root://jlab//evgen/f1.hepmc3.tree.root,hepmc3.tree.root,1000,0",
            "root://jlab//evgen/f1.hepmc3.tree.root,hepmc3.tree.root,1000,1",
        ],
        "site": "BNL_PanDA_1",
        "exec": "python3 evgen_job_dispatcher.py %RNDM=0 dis_18x275",
        "containerImage": "docker://eicweb/eic_xl:26.06.0-stable",
        "nJobs": 2,
        "env": {"DETECTOR_CONFIG": "epic_craterlake", "EBEAM": 18, "NOTE": "a b; $(x)"},
        "skipScout": True,
        **over,
    }


@pytest.fixture
def panda(operator_token: Any) -> Any:
    """PanDA without tasks of the operator yet."""
    with FakePanda(id_tokens=(operator_token.id_token,)) as fake:
        yield fake


@pytest.fixture
def pcs() -> Any:
    with FakeMonitor() as fake:
        fake.add_task(SUBMIT_TASK, evgen=spec())
        yield fake


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    proxy = tmp_path / "x509up_eicprod"
    proxy.write_bytes(b"-----BEGIN CERTIFICATE-----\nproxy\n-----END CERTIFICATE-----\n")
    proxy.chmod(0o600)
    dispatcher = tmp_path / "evgen_job_dispatcher.py"
    dispatcher.write_text("print('dispatch')\n")
    return {"proxy": proxy, "dispatcher": dispatcher}


def job_for(
    tmp_path: Path,
    token: Path,
    pcs: FakeMonitor,
    panda: FakePanda,
    files: dict[str, Path],
    notes: Any = None,
    **over: Any,
) -> Any:
    import sys

    config = {
        "monitor_url": pcs.url,
        "panda_sys": sys.prefix,
        "panda_env": {**panda.env(), MARK: panda.url},
        "dispatcher": str(files["dispatcher"]),
        "pcs_timeout": 2.0,
        "submit_timeout": 30.0,
        "kill_grace": 0.5,
        "record_backoff": 0.05,
        **over,
    }
    (tmp_path / "cache").mkdir(exist_ok=True)
    return testing.make_job(
        EVGEN,
        cache_dir=tmp_path / "cache",
        config=config,
        notes=notes,
        credentials={
            "panda_oidc_token": Credential("panda_oidc_token", path=token),
            "evgen_x509_proxy": Credential("evgen_x509_proxy", path=files["proxy"]),
        },
    )


def inp(**over: Any) -> Any:
    body = {
        "task_name": SUBMIT_TASK,
        "panda_tasks_id": "17",
        "owner": "alice",
        "panda_task_name": "whatever the web sends",
        **over,
    }
    return testing.structure(body, EVGEN.input)


def test_the_evgen_task_is_built_uploaded_submitted_and_recorded(
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
    files: dict[str, Path],
) -> None:
    out = testing.call_doer(EVGEN, inp(), job_for(tmp_path, operator_token.path, pcs, panda, files))
    assert out.status == "ok", out
    assert out.data == {"jedi_task_id": "41000"}
    (cmd,) = pcs.command_requests
    assert (cmd.arg("fmt"), cmd.arg("name"), cmd.arg("panda_tasks_id")) == (
        "evgen",
        SUBMIT_TASK,
        "17",
    )
    # The sandbox PanDA received.
    (archive,) = panda.files.values()
    with tarfile.open(fileobj=io.BytesIO(archive["content"])) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert sorted(members) == [
        "dis_18x275.csv",
        "environment-dis_18x275.sh",
        "evgen_job_dispatcher.py",
        "x509_eicprod",
    ]
    assert members["x509_eicprod"] == files["proxy"].read_bytes()
    env = members["environment-dis_18x275.sh"].decode()
    assert "export NOTE='a b; $(x)'\n" in env  # quoted for the worker's shell
    assert "export X509_USER_PROXY=x509_eicprod\n" in env
    assert members["dis_18x275.csv"].decode().count("\n") == 2
    # The task parameters.
    (task,) = panda.tasks
    params = task["params"]
    assert params["taskName"] == OUT_DS and params["site"] == "BNL_PanDA_1"
    assert params["noInput"] is True and params["userName"] == "alice"
    values = [p["value"] for p in params["jobParameters"]]
    assert f"-a {next(iter(panda.files))}" in values
    assert (
        "PANDAID=$PANDAID%20python3%20evgen_job_dispatcher.py%20${SEQNUMBER}%20dis_18x275" in values
    )
    assert params["sourceURL"] == panda.url
    # The record.
    (record,) = pcs.record_requests
    assert record.header("X-Remote-User") == "alice"
    assert record.json() == {
        "jedi_task_id": 41000,
        "panda_tasks_id": "17",
        "panda_task_name": OUT_DS,
        "manifest_rows": spec()["csvRows"],
    }
    assert pcs.tasks[SUBMIT_TASK]["panda_task_id"] == 41000


def test_a_panda_error_code_fails_and_the_catalogue_hears_of_it(
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
    files: dict[str, Path],
) -> None:
    panda.submit_behaviour = (1, "duplication in DEFT")
    out = testing.call_doer(EVGEN, inp(), job_for(tmp_path, operator_token.path, pcs, panda, files))
    assert out.status == "error" and "duplication in DEFT" in out.reason
    assert pcs.failures == [{"name": SUBMIT_TASK, "panda_tasks_id": "17", "reason": out.reason}]
    assert pcs.record_requests == []


@pytest.mark.parametrize("failure", [503, "hang"])
def test_a_catalogue_down_or_hung_fails_before_anything_is_sent(
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
    files: dict[str, Path],
    failure: Any,
) -> None:
    pcs.command_failure = failure
    out = testing.call_doer(EVGEN, inp(), job_for(tmp_path, operator_token.path, pcs, panda, files))
    assert out.status == "error" and "nothing was submitted" in out.reason
    assert panda.server.requests == []


def test_a_hung_panda_times_out_and_a_retry_asks_panda_before_submitting_again(
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
    files: dict[str, Path],
) -> None:
    # PanDA registers the task and never answers: the id is never seen.
    panda.hang_after_accept = True
    notes = journal_notes(tmp_path / "journal.db")
    job = job_for(tmp_path, operator_token.path, pcs, panda, files, notes=notes, submit_timeout=4.0)
    out = testing.call_doer(EVGEN, inp(), job)
    assert out.status == "error" and "timed out after 4s" in out.reason
    assert "PanDA may have task" in out.reason
    assert processes_with_env(f"{MARK}={panda.url}") == []
    assert len(panda.tasks) == 1 and pcs.tasks[SUBMIT_TASK]["panda_task_id"] is None
    # The request comes back (redelivered): PanDA is asked, its id recorded, no resubmission.
    panda.hang_after_accept = False
    again = testing.call_doer(EVGEN, inp(), attrs.evolve(job, interrupted=True, attempt=2))
    assert again.status == "ok" and again.data == {"jedi_task_id": "41000", "resumed": True}
    assert len(panda.submit_requests) == 1
    assert pcs.tasks[SUBMIT_TASK]["panda_task_id"] == 41000


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"csvBase": "../../etc/x"}, "csvBase"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "LD_PRELOAD"),
        ({"env": {"X509_USER_PROXY": "/home/op/.globus/x"}}, "X509_USER_PROXY"),
        ({"csvRows": ["a\nexport EVIL=1"]}, "csvRows[0]"),
        ({"inputDataset": "epic:/x"}, "inputDataset"),
        ({"site": "BNL; rm"}, "site"),
        ({"outDS": ""}, "outDS"),
        ({"nJobs": "many"}, "nJobs"),
    ],
)
def test_a_hostile_spec_is_refused_and_nothing_is_uploaded(
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
    files: dict[str, Path],
    over: dict[str, Any],
    why: str,
) -> None:
    pcs.tasks[SUBMIT_TASK]["evgen_spec"] = spec(**over)
    out = testing.call_doer(EVGEN, inp(), job_for(tmp_path, operator_token.path, pcs, panda, files))
    assert out.status == "error" and why in out.reason, out.reason
    assert panda.server.requests == [] and panda.files == {}


def test_submit_task_and_submit_evgen_task_share_one_key_per_task() -> None:
    from opsagent_submit_task import SubmitInput

    submit_task = testing.installed("submit_task")
    one = testing.structure({"task_name": SUBMIT_TASK}, SubmitInput)
    assert submit_task.key_of(one) == EVGEN.key_of(inp()) == f"submit:{SUBMIT_TASK}"
    assert EVGEN.action == "evgen_task_submit" and submit_task.action == "task_submit"


def test_an_expired_token_fails_before_any_call(
    tmp_path: Path,
    operator_token: Any,
    pcs: FakeMonitor,
    panda: FakePanda,
    files: dict[str, Path],
) -> None:
    from panda_ops_support import token_file_bytes

    stale = tmp_path / "stale" / ".token"
    stale.parent.mkdir()
    stale.write_bytes(token_file_bytes(exp_in=-60)[0])
    out = testing.call_doer(EVGEN, inp(), job_for(tmp_path, stale, pcs, panda, files))
    assert out.status == "error" and "expired" in out.reason
    assert panda.server.requests == [] and pcs.command_requests == []
