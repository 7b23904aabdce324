"""The declaration and its configuration: the old agent's events, a time limit that fits."""

from __future__ import annotations

import opsagent_submit_task
import pytest
from opsagent import Capability
from opsagent.testing import InputError, host_overrides, installed, structure
from opsagent_submit_task import SubmitConfig, SubmitInput
from opsagent_submit_task.submit import reconcile


def declared() -> Capability:
    caps: list[Capability] = []
    opsagent_submit_task.register_capabilities(register=caps.append)
    (cap,) = caps
    return cap


def test_the_installed_entry_point_declares_submit_task_as_wire_md_says() -> None:
    cap = installed("submit_task")
    assert cap.distribution == "opsagent-submit-task"
    assert cap.events == {
        "ok": "prodtask_submitted",
        "unrecorded": "prodtask_submit_unrecorded",
        "error": "prodtask_submit_failed",
        "timeout": "prodtask_submit_failed",
    }
    assert cap.time_limit == 300
    assert cap.credentials == ("panda_oidc_token", "pcs_token")
    assert cap.isolation == "process" and cap.programs == ("prun",)
    # An attempt that may have been cut short is looked at before prun could run again.
    assert cap.reconcile is reconcile
    inp = structure({"task_name": "t.1", "owner": "bob", "sender": "web"}, SubmitInput)
    # One key space with submit_evgen_task (LEGACY.md: "shared with submit_task").
    assert cap.key_of(inp) == "submit:t.1"
    assert cap.action == "task_submit"
    assert cap.echo_of(inp) == {"task_name": "t.1"}
    for sample in cap.samples:
        structure(dict(sample), SubmitInput)


def test_epicprod_submit_timeout_sets_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPICPROD_SUBMIT_TIMEOUT", "600")
    assert host_overrides(declared()) == {"time_limit": 600}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"task_name": "../x"}, "$.task_name: expected a catalogue task name, got '../x'"),
        ({"task_name": "a/b"}, "$.task_name: expected a catalogue task name"),
        ({"task_name": "a b"}, "$.task_name: expected a catalogue task name"),
        ({"task_name": "a\nb"}, "$.task_name: expected a catalogue task name"),
        ({"task_name": ".hidden"}, "$.task_name: expected a catalogue task name"),
        ({"task_name": ""}, "$.task_name: expected a catalogue task name"),
        ({"task_name": 12}, "$.task_name: expected a string"),
        ({}, "$.task_name: required field missing"),
        ({"task_name": "t", "owner": "eve\r\nX-Admin: 1"}, "$.owner: expected a user name"),
    ],
)
def test_input_is_checked(fields: dict[str, object], error: str) -> None:
    with pytest.raises(InputError) as info:
        structure(fields, SubmitInput)
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_the_default_budget_fits_the_default_time_limit() -> None:
    cfg = SubmitConfig()
    total = sum(s for _, s in cfg.budget())
    assert total == 2 * 15 + 15 + 180 + 5 + 3 * 15 + (2 + 4) + 5
    assert total < 300


def test_a_budget_that_does_not_fit_the_time_limit_is_refused_with_the_numbers() -> None:
    # The time limit is the host's (declared, [capability.submit_task], EPICPROD_SUBMIT_TIMEOUT):
    # the job checks it before anything else, and selftest shows the same.
    with pytest.raises(ValueError) as info:
        structure({"prun_timeout": 280}, SubmitConfig).check_time_limit(declared().time_limit)
    error = str(info.value)
    assert "time limit 300 s is not longer than the inner budgets" in error
    assert "prun 280 s" in error and "= 386 s" in error

    with pytest.raises(ValueError, match="time limit 120 s .* = 286 s"):
        structure({}, SubmitConfig).check_time_limit(120)
    structure({"prun_timeout": 10}, SubmitConfig).check_time_limit(120)  # 116 s fits


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"panda_env": {"PANDA_CONFIG_ROOT": "/x"}}, "PANDA_CONFIG_ROOT is set by the capability"),
        (
            {"panda_env": {"PANDA_AUTH_ID_TOKEN": "x"}},
            "PANDA_AUTH_ID_TOKEN is set by the capability",
        ),
        ({"panda_env": {"bad name": "x"}}, "'bad name' is not an environment variable name"),
        ({"monitor_url": "ftp://host"}, "expected an http(s) base URL"),
        ({"record_tries": 0}, "record_tries"),
        ({"prun_timeout": "180"}, "expected a number"),
    ],
)
def test_bad_settings_are_refused(table: dict[str, object], error: str) -> None:
    with pytest.raises(InputError) as info:
        structure(table, SubmitConfig)
    assert error in "; ".join(info.value.errors)
