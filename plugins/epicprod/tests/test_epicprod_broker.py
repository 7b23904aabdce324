"""The 15 epicprod message types through one host on the real ActiveMQ, each run by the
stub doer (tests/programs/stubdoer.py) as the web tier's interpreter: the exact argv
the doer got and the event against LEGACY.md's shape (plus additive fields).

Needs the broker started by ``scripts/services.sh start activemq`` (``make test`` does).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from opsagent.testing import port_open  # noqa: E402
from support import Caller, HostProcess, service_env  # noqa: E402

STUB = str(ROOT / "tests" / "programs" / "stubdoer.py")


@pytest.fixture(scope="module")
def activemq() -> dict[str, str]:
    env = service_env("activemq")
    if not port_open(env["ACTIVEMQ_HOST"], int(env["ACTIVEMQ_PORT"])):
        pytest.fail(
            "ActiveMQ is not accepting connections: run `scripts/services.sh start "
            "activemq` (`make test` does)"
        )
    return env


class Web:
    """The web tier's checkout as the stub doer sees it: plans in, calls out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def plan(self, key: str, **behaviour: Any) -> None:
        plans = {key: behaviour}
        (self.root / "plan.json").write_text(json.dumps(plans))

    def calls(self) -> list[dict[str, Any]]:
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def served(activemq, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("epicprod")
    web = Web(tmp / "swf-monitor")
    host = HostProcess(
        tmp / "host",
        activemq,
        name="epicprod",
        extra={
            "epicprod": {"monitor_root": str(web.root), "python": STUB},
            "capability.association_sweep": {"association_sweep_days": 21},
        },
        paths=(),
        # The old agent's variable sets evgen_rucio_update's limit (2 s) on this host.
        env={
            "EPICPROD_EVGEN_RUCIO_TIMEOUT": "2",
            "DJANGO_SETTINGS_MODULE": "swf.settings",
            "SECRET_NOT_ALLOWED": "leak",
        },
    ).start()
    caller = Caller(activemq, host.queue, host.topic)
    yield web, host, caller
    caller.close()
    host.stop()


def ask(
    caller: Caller, web: Web, msg_type: str, payload: dict[str, Any], timeout: float = 30
) -> tuple[dict[str, Any], list[str] | None]:
    before = len(web.calls())
    rid = caller.send(msg_type, payload, reply=False)
    event = caller.wait_event(rid, timeout=timeout)
    calls = web.calls()[before:]
    return event, (calls[-1]["argv"] if calls else None)


def legacy(event: dict[str, Any], shape: dict[str, Any]) -> None:
    """Every field of the old agent's event, equal, plus ``sender`` and ``namespace``."""
    assert {k: event.get(k, "<absent>") for k in shape} == shape, event
    assert event["namespace"] == "prodops" and event["sender"] == "epicprod"


PY = "scripts/"

# msg_type, request, plan key, plan, expected argv (after the interpreter), LEGACY event.
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], list[str], dict[str, Any]]] = [
    (
        "sync_epicprod_inventory",
        {"jeditaskid": 123, "task_name": "t1"},
        "src/manage.py",
        {"stdout": "synced\n"},
        ["src/manage.py", "sync_epicprod_inventory", "--jeditaskid", "123"],
        {
            "msg_type": "epicprod_inventory_ready",
            "ok": True,
            "pandaid": None,
            "jeditaskid": "123",
            "task_name": "t1",
            "error": "",
        },
    ),
    (
        "sync_epicprod_inventory",
        {"pandaid": "9"},
        "src/manage.py",
        {"stderr": "INFO boot\nCommandError: no job 9\nINFO done\n", "exit": 1},
        ["src/manage.py", "sync_epicprod_inventory", "--pandaid", "9"],
        {
            "msg_type": "epicprod_inventory_ready",
            "ok": False,
            "pandaid": "9",
            "jeditaskid": None,
            "task_name": None,
            "error": "CommandError: no job 9",
        },
    ),
    (
        "refresh_system_status",
        {"only": ["rucio", "panda"]},
        PY + "refresh-system-status.py",
        {"stdout": "refreshed 2\n"},
        [
            PY + "refresh-system-status.py",
            "--source",
            "ops_agent",
            "--only",
            "rucio",
            "--only",
            "panda",
        ],
        {"msg_type": "system_status_ready", "ok": True, "error": ""},
    ),
    (
        "capture_system_snap",
        {"scope": "testbed", "requested_at": "2026-12-03T04:00:00+00:00"},
        PY + "capture-system-snap.py",
        {"stdout": '[{"scope": "testbed", "outcome": "snap", "error": null}]\n'},
        [
            PY + "capture-system-snap.py",
            "--scope",
            "testbed",
            "--requested-at",
            "2026-12-03T04:00:00+00:00",
            "--manual",
        ],
        {
            "msg_type": "snapper_capture_ready",
            "ok": True,
            "scope": "testbed",
            "manual": True,
            "error": "",
            "results": [{"scope": "testbed", "outcome": "snap", "error": None}],
        },
    ),
    (
        "association_sweep",
        {},
        "src/manage.py",
        {"stdout": "scanned\nassociated 4\n"},
        ["src/manage.py", "sweep_panda_associations", "--days", "21"],
        {"msg_type": "association_sweep_done", "ok": True, "summary": "associated 4"},
    ),
    (
        "questionnaire_import",
        {},
        PY + "import-questionnaires.py",
        {"stdout": "SKIPPED no questionnaire_csv_url\n"},
        [
            PY + "import-questionnaires.py",
            "--from-sysconfig",
            "--created-by",
            "questionnaire_import",
        ],
        {
            "msg_type": "questionnaire_import_done",
            "ok": True,
            "outcome": "skipped",
            "reason": "SKIPPED no questionnaire_csv_url",
        },
    ),
    (
        "questionnaire_automatch",
        {"all": True, "created_by": "wenaus"},
        PY + "match-questionnaires.py",
        {"stdout": "matched 3\n"},
        [PY + "match-questionnaires.py", "--created-by", "wenaus", "--all"],
        {"msg_type": "questionnaire_automatch_done", "ok": True, "summary": "matched 3"},
    ),
    (
        "questionnaire_match_update",
        {},
        PY + "update-questionnaire-matches.py",
        {"stdout": "rebuilt\n12 tasks\n"},
        [PY + "update-questionnaire-matches.py", "--updated-by", "questionnaire_match"],
        {"msg_type": "questionnaire_match_ready", "ok": True, "summary": "rebuilt\n12 tasks"},
    ),
    (
        "catalog_import",
        {"source": "epic-prod"},
        PY + "pcs-catalog-import.py",
        {"stdout": "walking\nimported 4900 datasets\n"},
        [PY + "pcs-catalog-import.py", "epic-prod"],
        {
            "msg_type": "catalog_import_ready",
            "source": "epic-prod",
            "ok": True,
            "summary": "imported 4900 datasets",
            "error": "<absent>",
        },
    ),
    (
        "catalog_import",
        {"source": "csv"},
        PY + "pcs-catalog-import.py",
        {"stderr": "Traceback\nRuntimeError: PCS said 500\n", "exit": 1},
        [PY + "pcs-catalog-import.py", "csv"],
        {
            "msg_type": "catalog_import_ready",
            "source": "csv",
            "ok": False,
            "error": "RuntimeError: PCS said 500",
        },
    ),
    (
        "campaign_progress_refresh",
        {},
        PY + "refresh-campaign-progress.py",
        {"stdout": "progress rebuilt\n"},
        [PY + "refresh-campaign-progress.py", "--generated-by", "progress_refresh"],
        {"msg_type": "campaign_progress_ready", "ok": True, "summary": "progress rebuilt"},
    ),
    (
        "evgen_rucio_update",
        {},
        PY + "import_evgen_rucio.py",
        {"grandchild": True, "sleep": 60},
        [PY + "import_evgen_rucio.py", "--apply"],
        {"msg_type": "evgen_rucio_ready", "ok": False, "error": "timed out after 2s"},
    ),
    (
        "rucio_arrivals_sweep",
        {},
        PY + "rucio-arrivals-sweep.py",
        {"stderr": "FATAL rucio unreachable\nretrying\n", "exit": 2},
        [PY + "rucio-arrivals-sweep.py", "--created-by", "prodops_agent"],
        {"msg_type": "rucio_arrivals_sweep_done", "ok": False, "error": "FATAL rucio unreachable"},
    ),
    (
        "epic_prod_past_import",
        {"created_by": "ops"},
        PY + "epic-prod-past-import.py",
        {},
        [PY + "epic-prod-past-import.py", "--created-by", "ops"],
        {"msg_type": "epic_prod_past_import_done", "ok": True},
    ),
    (
        "file_events_measure",
        {},
        PY + "measure-file-events.py",
        {"signal": "SIGTERM"},
        [PY + "measure-file-events.py"],
        {"msg_type": "file_events_measure_done", "ok": False, "error": "killed by signal SIGTERM"},
    ),
    (
        "delivery_daily_rebuild",
        {},
        PY + "delivery-daily-rebuild.py",
        {"stdout": 'rebuilding\nSUMMARY {"day": "2026-12-02", "rows": 3}\n'},
        [PY + "delivery-daily-rebuild.py", "--created-by", "delivery_daily_rebuild"],
        {
            "msg_type": "delivery_daily_rebuild_done",
            "ok": True,
            "summary": {"day": "2026-12-02", "rows": 3},
        },
    ),
    (
        "assessment_completed",
        {
            "job_id": 77,
            "prompt_group_id": "pg-1",
            "status": "completed",
            "timing": {"elapsed_s": 3},
        },
        "swf_epicprod.assessment.enforce",
        {"stdout": "registered\n"},
        [
            "-m",
            "swf_epicprod.assessment.enforce",
            "--job-id",
            "77",
            "--prompt-group-id",
            "pg-1",
            "--status",
            "completed",
            "--timing",
            "{'elapsed_s': 3}",
        ],
        {"msg_type": "assessment_completed_done", "ok": True},
    ),
]


def test_each_message_type_runs_its_doer_and_ends_with_the_old_event(served):
    web, host, caller = served
    seen = set()
    for msg_type, payload, key, behaviour, argv, shape in CASES:
        web.plan(key, **behaviour)
        event, got = ask(caller, web, msg_type, payload)
        assert got == argv, msg_type
        legacy(event, shape)
        seen.add(msg_type)
    assert len(seen) == 15
    # The doers ran in the checkout with the declared variables only.
    call = web.calls()[-1]
    assert call["cwd"] == str(web.root)
    assert call["env"] == {"DJANGO_SETTINGS_MODULE": "swf.settings"}
    # The timed-out doer's grandchild died with it.
    kid = int((web.root / "grandchild.pid").read_text())
    assert (
        not Path(f"/proc/{kid}").exists()
        or "Z" in Path(f"/proc/{kid}/stat").read_text().rpartition(")")[2].split()[:1]
    )


def test_campaign_progress_cooldown_answers_at_once_with_a_skipped_event(served):
    web, _host, caller = served
    web.plan(PY + "refresh-campaign-progress.py", stdout="rebuilt\n")
    first, _ = ask(caller, web, "campaign_progress_refresh", {"created_by": "cooldown-test"})
    started = time.monotonic()
    second, argv = ask(caller, web, "campaign_progress_refresh", {})
    assert time.monotonic() - started < 10
    assert argv is None, "the doer ran again within the cooldown"
    legacy(second, {"msg_type": "campaign_progress_ready", "ok": True, "outcome": "skipped"})
    assert "cooldown" in second["reason"]


def test_refresh_system_status_periodic_and_manual_full_refresh_share_one_key(served):
    web, host, caller = served
    web.plan(PY + "refresh-system-status.py", sleep=3)
    before = len(web.calls())
    periodic = caller.send("refresh_system_status", {"source": "ops_agent_periodic"}, reply=False)
    deadline = time.monotonic() + 20
    while len(web.calls()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    manual = caller.send("refresh_system_status", {"only": []}, reply=False)
    # The manual full refresh while the periodic one runs is its duplicate (the old
    # agent's keys differed and the two ran at once).
    second = caller.wait_event(manual)
    assert second["msg_type"] == "request_rejected" and second["code"] == "duplicate"
    first = caller.wait_event(periodic)
    assert first["msg_type"] == "system_status_ready" and first["ok"] is True
    assert len(web.calls()) == before + 1


HOSTILE = ["-x", "--help", "--", "a\nb", "x" * 5000, "--all=1"]
# Every field that reaches an argv, with a valid rest of the request.
FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("sync_epicprod_inventory", {}, "task_name"),
    ("sync_epicprod_inventory", {}, "pandaid"),
    ("refresh_system_status", {}, "only"),
    ("refresh_system_status", {}, "selected"),
    ("refresh_system_status", {}, "source"),
    ("capture_system_snap", {}, "scope"),
    ("capture_system_snap", {}, "requested_at"),
    ("association_sweep", {}, "days"),
    ("questionnaire_import", {}, "created_by"),
    ("questionnaire_automatch", {}, "created_by"),
    ("questionnaire_match_update", {}, "created_by"),
    ("catalog_import", {}, "source"),
    ("campaign_progress_refresh", {}, "created_by"),
    ("rucio_arrivals_sweep", {}, "created_by"),
    ("epic_prod_past_import", {}, "created_by"),
    ("delivery_daily_rebuild", {}, "created_by"),
    ("assessment_completed", {}, "job_id"),
    ("assessment_completed", {"job_id": "1"}, "prompt_group_id"),
    ("assessment_completed", {"job_id": "2"}, "page_group_id"),
    ("assessment_completed", {"job_id": "3"}, "status"),
]


def test_hostile_values_in_every_argv_field_are_refused_or_inert(served):
    web, _host, caller = served
    web.plan("*", stdout="ok\n")
    for msg_type, base, field in FIELDS:
        for value in HOSTILE:
            before = len(web.calls())
            rid = caller.send(msg_type, {**base, field: value}, reply=False)
            event = caller.wait_event(rid)
            calls = web.calls()[before:]
            if event["msg_type"] == "request_rejected":
                assert event["code"] == "invalid", event
                assert any(e.startswith(f"$.{field}") for e in event["errors"]), event
                assert calls == []
            else:
                # Accepted: the value reached the doer as one argument, never as an option.
                assert calls, (msg_type, field, value, event)
                argv = calls[-1]["argv"]
                assert value in argv and not value.startswith("-"), (msg_type, field, argv)
