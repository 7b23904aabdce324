"""The epicprod declarations: input rules, dedup keys and the old agent's ids, without a host."""

from __future__ import annotations

import opsagent_epicprod
import pytest
from opsagent.testing import InputError, structure

CAPS = {c.msg_type: c for c in opsagent_epicprod.capabilities()}


def inp(msg_type: str, body: dict):
    return structure(body, CAPS[msg_type].input)


def test_all_fifteen_are_declared_with_the_old_action_ids_and_limits():
    expected = {
        "sync_epicprod_inventory": ("inventory_sync", 180, "EPICPROD_INVENTORY_TIMEOUT"),
        "refresh_system_status": ("system_status_refresh", 60, "EPICPROD_SYSTEM_STATUS_TIMEOUT"),
        "capture_system_snap": ("snapper_capture", 30, "EPICPROD_SNAPPER_CAPTURE_TIMEOUT"),
        "association_sweep": ("association_sweep", 600, "EPICPROD_ASSOCIATION_SWEEP_TIMEOUT"),
        "questionnaire_import": (
            "questionnaire_import",
            120,
            "EPICPROD_QUESTIONNAIRE_IMPORT_TIMEOUT",
        ),
        "questionnaire_automatch": ("questionnaire_automatch", 1800, "EPICPROD_AUTOMATCH_TIMEOUT"),
        "questionnaire_match_update": (
            "questionnaire_match",
            300,
            "EPICPROD_QUESTIONNAIRE_MATCH_TIMEOUT",
        ),
        "catalog_import": ("catalog_import", 1800, "EPICPROD_CATALOG_IMPORT_TIMEOUT"),
        "campaign_progress_refresh": (
            "progress_refresh",
            300,
            "EPICPROD_CAMPAIGN_PROGRESS_TIMEOUT",
        ),
        "evgen_rucio_update": ("evgen_sweep", 900, "EPICPROD_EVGEN_RUCIO_TIMEOUT"),
        "rucio_arrivals_sweep": ("rucio_arrivals_sweep", 300, "EPICPROD_RUCIO_ARRIVALS_TIMEOUT"),
        "epic_prod_past_import": ("past_import", 600, "EPICPROD_PAST_IMPORT_TIMEOUT"),
        "file_events_measure": ("file_events_measure", 3600, "EPICPROD_FILE_EVENTS_TIMEOUT"),
        "delivery_daily_rebuild": (
            "delivery_daily_rebuild",
            3600,
            "EPICPROD_DELIVERY_DAILY_TIMEOUT",
        ),
        "assessment_completed": ("assessment_enforce", 300, "EPICPROD_ASSESSMENT_ENFORCE_TIMEOUT"),
    }
    got = {m: (c.action, c.time_limit, c.time_limit_env) for m, c in CAPS.items()}
    assert got == expected


@pytest.mark.parametrize("source", ["csv", "epic-prod"])
def test_catalog_import_runs_only_the_two_sources(source):
    assert CAPS["catalog_import"].key_of(inp("catalog_import", {"source": source})) == (
        f"catalog_import:{source}"
    )


@pytest.mark.parametrize("source", ["", "CSV", "--help", "../x", 3, None])
def test_catalog_import_refuses_any_other_source(source):
    with pytest.raises(InputError) as info:
        inp("catalog_import", {"source": source})
    assert info.value.errors[0].startswith("$.source")


def test_periodic_and_manual_full_refresh_share_the_key():
    cap = CAPS["refresh_system_status"]
    periodic = cap.key_of(inp("refresh_system_status", {"source": "ops_agent_periodic"}))
    manual = cap.key_of(inp("refresh_system_status", {}))
    empty = cap.key_of(inp("refresh_system_status", {"only": []}))
    assert periodic == manual == empty == "refresh_system_status:all"
    assert cap.key_of(inp("refresh_system_status", {"selected": ["b", "a", "b"]})) == (
        "refresh_system_status:a,b"
    )
    assert cap.key_of(inp("refresh_system_status", {"only": "rucio"})) == (
        "refresh_system_status:rucio"
    )


def test_inventory_needs_a_subject_and_takes_the_first():
    with pytest.raises(InputError) as info:
        inp("sync_epicprod_inventory", {})
    assert info.value.errors == ["$.pandaid: one of pandaid, jeditaskid or task_name is required"]
    cap = CAPS["sync_epicprod_inventory"]
    both = inp("sync_epicprod_inventory", {"pandaid": 5, "jeditaskid": "6"})
    assert cap.key_of(both) == "sync_inventory:pandaid:5"
    assert cap.doer.program.argv_of(both, None)[-2:] == ["--pandaid", "5"]


def test_snapper_scope_and_keys():
    cap = CAPS["capture_system_snap"]
    assert cap.key_of(inp("capture_system_snap", {})) == (
        "capture_system_snap:snapper_capture_manual_all"
    )
    assert cap.key_of(inp("capture_system_snap", {"manual": False})) == (
        "capture_system_snap:snapper_capture_periodic"
    )
    with pytest.raises(InputError):
        inp("capture_system_snap", {"scope": "everything"})


def test_assessment_renders_as_the_old_agent_did():
    got = inp(
        "assessment_completed", {"job_id": 7, "page_group_id": 9, "timing": {"a": True, "b": None}}
    )
    argv = CAPS["assessment_completed"].doer.program.argv_of(got, None)
    assert argv[-6:] == [
        "--job-id",
        "7",
        "--page-group-id",
        "9",
        "--timing",
        "{'a': True, 'b': None}",
    ]
    with pytest.raises(InputError):
        inp("assessment_completed", {"job_id": ""})
    with pytest.raises(InputError):
        inp("assessment_completed", {"job_id": True})


def test_selftest_checks_the_checkout_and_the_interpreter(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    stub = Path(__file__).resolve().parents[3] / "tests" / "programs" / "stubdoer.py"
    checkout = tmp_path / "swf-monitor"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / "scripts" / "pcs-catalog-import.py").write_text("")
    cfg = tmp_path / "h.toml"
    cfg.write_text(
        f'[host]\ncache_dir = "{tmp_path}/cache"\nstate_dir = "{tmp_path}/state"\n'
        f'[epicprod]\nmonitor_root = "{checkout}"\npython = "{stub}"\n'
        f'[capability.questionnaire_import]\nmonitor_root = "{tmp_path}/elsewhere"\n'
    )

    def checks(msg_type: str) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "opsagent.cli.main", "--config", str(cfg), "selftest",
             "--json", "--capability", msg_type],
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        found = json.loads(done.stdout)["checks"]
        return {c["check"]: c["status"] for c in found if c["subject"] == msg_type}

    got = checks("catalog_import")
    assert got["working directory"] == "ok"
    assert got[f"program {stub}"] == "ok"
    assert got["script"] == "ok"
    # A capability's own table wins over [epicprod]; its script is missing too.
    got = checks("questionnaire_import")
    assert got["working directory"] == "fail"
    assert got["script"] == "fail"


def test_quiet_capture_is_the_old_snappers_rule():
    from opsagent import Outcome

    periodic = inp("capture_system_snap", {"manual": False})
    manual = inp("capture_system_snap", {})
    assert opsagent_epicprod.quiet_capture(periodic, Outcome.ok(captured=False))
    assert not opsagent_epicprod.quiet_capture(periodic, Outcome.ok(captured=True))
    assert not opsagent_epicprod.quiet_capture(periodic, Outcome.error("failed"))
    assert not opsagent_epicprod.quiet_capture(periodic, Outcome.timeout("timed out after 30s"))
    assert not opsagent_epicprod.quiet_capture(manual, Outcome.ok(captured=False))
    # The capability's own rule: a periodic capture cron sends is as quiet as the host's.
    assert CAPS["capture_system_snap"].quiet is opsagent_epicprod.quiet_capture


@pytest.mark.parametrize("msg_type, sublevel, live_default", [
    ("association_sweep", "high", True),
    ("evgen_rucio_update", "high", True),
    ("catalog_import", "high", True),
    ("questionnaire_import", "normal", True),
    ("questionnaire_automatch", "normal", True),
    ("rucio_arrivals_sweep", "low", False),
    # The monitor's catalogue of action ids (ACTION_DEFAULTS in swf-monitor's
    # monitor_app/epicprod_logging.py, "MUST mirror the call sites").
    ("epic_prod_past_import", "high", True),
    ("sync_epicprod_inventory", "low", False),
    ("refresh_system_status", "low", False),
    ("questionnaire_match_update", "low", False),
    ("campaign_progress_refresh", "low", False),
])
def test_action_records_keep_the_old_sublevel_and_live_default(msg_type, sublevel, live_default):
    cap = CAPS[msg_type]
    assert (cap.sublevel, cap.live_default) == (sublevel, live_default)


def test_only_a_failed_enforcement_is_recorded_as_the_old_agent_did():
    assert CAPS["assessment_completed"].record == "failed"
    assert {t for t, c in CAPS.items() if c.record != "always"} == {"assessment_completed"}
