"""The real ``catalog_sync`` declaration through one host on the real ActiveMQ, each step's
doer the stub doer of the test suite: 14 steps in the old order, the chain's
``created_by`` in each doer's argv, a doer's non-zero exit counted as a failure.

Needs the broker started by ``scripts/services.sh start activemq`` (``make test`` does).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from opsagent_epicprod.catalog_sync import STEPS  # noqa: E402
from support import Caller, HostProcess  # noqa: E402

STUB = str(ROOT / "tests" / "programs" / "stubdoer.py")


@pytest.fixture
def activemq(broker: dict[str, str]) -> dict[str, str]:
    """The run's broker (the root conftest's ``broker``: Classic, then Artemis)."""
    return broker


def test_catalog_sync_runs_the_old_chain_in_order_and_counts_a_failed_exit(activemq, tmp_path):
    web = tmp_path / "swf-monitor"
    web.mkdir()
    (web / "plan.json").write_text(json.dumps({
        "scripts/rucio-arrivals-sweep.py": {"stderr": "INFO start\nERROR: rucio down\n",
                                            "exit": 2},
        "pcs.definitions_sweep": {"stdout": 'sweeping\n{"swept": 3, "created": 1}\n'},
        "*": {"stdout": "done\n"},
    }))
    token = tmp_path / "monitor-token"
    token.write_text("t0ken-for-the-monitor\n")
    os.chmod(token, 0o600)
    host = HostProcess(
        tmp_path / "host", activemq, name="epicprod",
        extra={
            "epicprod": {"monitor_root": str(web), "python": STUB},
            # This host offers only the epicprod capabilities (and the built-in ones).
            "capabilities": {"deny": ["fetch_payload_log", "submit_task",
                                      "rucio_snapshot_update", "submit_evgen_task",
                                      "panda_task_operation", "panda_task_operations",
                                      "campaign_provenance_sweep"]},
            "credentials.monitor_token": {"file": str(token)},
        },
        paths=(),
    ).start()
    caller = Caller(activemq, host.queue, host.topic)
    try:
        rid = caller.send("catalog_sync", {"created_by": "nightly"}, reply=False)
        event = caller.wait_event(rid, timeout=120)
    finally:
        caller.close()
        host.stop()
    assert event["msg_type"] == "catalog_sync_done" and event["outcome"] == "error", event
    assert event["steps"] == 14
    assert [r["step"] for r in event["results"]] == [s.label for s in STEPS]
    assert event["failed"] == ["rucio_snapshot_update", "rucio_arrivals_sweep"]
    by_step = {r["step"]: r for r in event["results"]}
    assert by_step["rucio_snapshot_update"]["reason"] == (
        "not run: no capability 'rucio_snapshot_update' on this host")
    assert by_step["rucio_arrivals_sweep"]["reason"] == "ERROR: rucio down"
    assert by_step["credential_expiry_check"]["outcome"] == "ok"
    # The doers ran in the old chain's order, each with the chain's created_by.
    calls = [json.loads(line)["argv"] for line in (web / "calls.jsonl").read_text().splitlines()]
    assert calls == [
        ["scripts/pcs-catalog-import.py", "csv"],
        ["scripts/epic-prod-past-import.py", "--created-by", "nightly"],
        ["scripts/import-questionnaires.py", "--from-sysconfig", "--created-by", "nightly"],
        ["src/manage.py", "sweep_panda_associations", "--days", "14"],
        ["scripts/rucio-arrivals-sweep.py", "--created-by", "nightly"],
        ["scripts/import_evgen_rucio.py", "--apply"],
        ["-m", "pcs.definitions_sweep", "--apply", "--created-by", "nightly"],
        ["scripts/match-questionnaires.py", "--created-by", "nightly"],
        ["scripts/update-questionnaire-matches.py", "--updated-by", "nightly"],
        ["scripts/refresh-campaign-progress.py", "--generated-by", "nightly"],
        ["scripts/measure-file-events.py"],
        ["scripts/delivery-daily-rebuild.py", "--created-by", "nightly"],
    ]
    steps = {e["job_id"].split("/", 1)[1]: e for e in caller.events
             if e.get("chain_job_id") == rid}
    assert steps["9.dataset_definitions_sweep"]["summary"] == {"swept": 3, "created": 1}
    assert steps["1.credential_expiry_check"]["credentials"] == [
        {"credential": "monitor_token", "status": "ok", "days_left": None,
         "detail": steps["1.credential_expiry_check"]["credentials"][0]["detail"]}]
    assert len(steps) == 13  # the step this host does not offer has no job
