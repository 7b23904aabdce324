"""The host SIGKILLed between prun and the record, then restarted, on the real ActiveMQ:
PanDA receives exactly one submission and the catalogue gets its id.

Needs the brokers started by ``scripts/services.sh start activemq artemis`` (``make test`` does).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from opsagent.testing import processes_with_env
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import TASK, OperatorToken

pytestmark = pytest.mark.broker

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from support import Caller, HostProcess  # noqa: E402


@pytest.fixture
def activemq(broker: dict[str, str]) -> dict[str, str]:
    """The run's broker (the root conftest's ``broker``: Classic, then Artemis)."""
    return broker


def test_host_killed_between_prun_and_record_submits_once_and_records_after_restart(
    activemq: dict[str, str],
    pcs: FakeCatalogue,
    panda: FakePanda,
    operator_token: OperatorToken,
    tmp_path: Path,
) -> None:
    pcs_token = tmp_path / "pcs_token"
    pcs_token.write_text("pcs-secret\n")
    extra: dict[str, dict[str, Any]] = {
        "capabilities": {"allow": ["submit_task"]},
        "credentials.panda_oidc_token": {"file": str(operator_token.path)},
        "credentials.pcs_token": {"file": str(pcs_token)},
        "capability.submit_task": {
            "monitor_url": pcs.url,
            "pcs_timeout": 3,
            "prun_timeout": 30,
            "record_backoff": 0.05,
        },
        "capability.submit_task.panda_env": panda.env(),
    }
    run = tmp_path / "run"
    first = HostProcess(run, activemq, name="first", extra=extra, paths=()).start()
    caller = Caller(activemq, first.queue, first.topic)
    try:
        pcs.record_plan = ["hang"]  # the first record never answers...
        rid = caller.send("submit_task", {"task_name": TASK, "owner": "alice"}, reply=False)
        assert pcs.record_seen.wait(30), first.text()[-3000:]
        assert len(panda.tasks) == 1
        # ...and the host dies right then.  systemd (KillMode=mixed) takes the job's
        # process down with it; here that is every process carrying this test's paths.
        first.kill9()
        for pid in processes_with_env(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)
        assert caller.events_for(rid) == []
        assert pcs.tasks[TASK]["panda_task_id"] is None

        second = HostProcess(
            run,
            activemq,
            name="second",
            queue=first.queue,
            topic=first.topic,
            extra=extra,
            paths=(),
        ).start()
        try:
            event = caller.wait_event(rid, timeout=30)
            time.sleep(1.0)  # a second event, if any, would have arrived by now
            assert caller.events_for(rid) == [event]
        finally:
            second.stop()
    finally:
        caller.close()
        first.stop()

    assert event["msg_type"] == "prodtask_submitted"
    assert event["jedi_task_id"] == "41000" and event["resumed"] is True
    assert len(panda.submit_requests) == 1 and len(panda.tasks) == 1
    assert pcs.tasks[TASK]["panda_task_id"] == 41000
    assert pcs.tasks[TASK]["recorded_by"] == "alice"
    assert "attempt 2" in second.text()
    # The sandbox (and its token copy) is never in the shared cache.
    assert not (run / "cache" / "submit").exists()
