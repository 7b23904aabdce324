"""The declarations, and what a hostile queue writer's bodies get: a structured refusal
naming the field, before any job runs."""

from __future__ import annotations

from typing import Any

import pytest
from opsagent import testing
from opsagent.testing import InputError, installed
from panda_ops_support import BATCH, OPERATION, TASK


def test_the_installed_entry_point_declares_both_as_legacy_says() -> None:
    for msg_type in ("panda_task_operation", "panda_task_operations"):
        cap = installed(msg_type)
        assert cap.distribution == "opsagent-panda-ops"
        assert cap.events == {
            "ok": "panda_task_operation_done",
            "error": "panda_task_operation_done",
        }
        assert (
            cap.event_for("unverified") == cap.event_for("timeout") == "panda_task_operation_done"
        )
        assert cap.action == "panda_task_operation"
        assert cap.time_limit == 150  # 120 for the operation, 30 backstop
        assert cap.credentials == ("panda_oidc_token", "monitor_token")
        assert cap.reconcile is not None and cap.isolation == "process"
        for sample in cap.samples:
            testing.structure(dict(sample), cap.input)


def test_dedup_keys_are_legacys() -> None:
    inp = testing.structure(
        {"operation": "pause", "task_name": TASK, "jedi_task_id": "41000"}, OPERATION.input
    )
    assert OPERATION.key_of(inp) == "panda_op:pause:41000"
    assert OPERATION.echo_of(inp) == {
        "operation_id": None,
        "task_name": TASK,
        "jedi_task_id": "41000",
        "operation": "pause",
    }
    same = testing.structure(
        {"operation": "pause", "task_name": TASK, "jedi_task_id": 41000}, OPERATION.input
    )
    assert OPERATION.key_of(same) == OPERATION.key_of(inp)  # int or str: one key
    batch = testing.structure(
        {
            "batch_id": "b1",
            "operation": "resume",
            "items": [{"operation_id": "o1", "jedi_task_id": 1}],
        },
        BATCH.input,
    )
    assert BATCH.key_of(batch) == "panda_bulk:b1"
    assert BATCH.items_of(batch) == [{"operation_id": "o1", "task_name": None, "jedi_task_id": "1"}]


def test_the_web_tiers_extra_fields_are_accepted() -> None:
    inp = testing.structure(
        {
            "msg_type": "panda_task_operation",
            "namespace": "prodops",
            "operation": "retry_failures",
            "task_name": TASK,
            "jedi_task_id": 41000,
            "operation_id": "a-1",
            "increase": 1,
            "new_parameters": {"ramCount": 2000},
            "created_by": "alice",
            "sender": "web",
        },
        OPERATION.input,
    )
    assert inp.new_parameters == {"ramCount": 2000}


def refused(body: dict[str, Any], cls: type) -> str:
    with pytest.raises(InputError) as exc:
        testing.structure(body, cls)
    return "; ".join(exc.value.errors) if hasattr(exc.value, "errors") else str(exc.value)


BASE = {"operation": "pause", "task_name": TASK, "jedi_task_id": 41000, "operation_id": "a-1"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_name", "--allowTaskDuplication"),  # option smuggling
        ("task_name", "-x"),
        ("task_name", "t 1; rm -rf ~"),
        ("task_name", "t\n1"),
        ("task_name", ""),
        ("jedi_task_id", "41000; pauseTask(1)"),
        ("jedi_task_id", "-1"),
        ("jedi_task_id", "0x10"),
        ("jedi_task_id", 0),
        ("jedi_task_id", True),
        ("jedi_task_id", 1.5),
        ("jedi_task_id", "99999999999999999999"),
        ("operation", "kill"),
        ("operation", "pause "),
        ("operation_id", "../../api/logs"),
        ("operation_id", "a/b"),
        ("increase", 0),
        ("increase", 10**6),
        ("increase", "3"),
        ("new_parameters", ["ramCount", 1]),
        ("new_parameters", "ramCount=1"),
        ("new_parameters", {"ram Count": 1}),
        ("new_parameters", {"__class__": {"nested": 1}}),
        ("new_parameters", {"x": "a\x00b"}),
        ("new_parameters", {"x": "y" * 5000}),
        ("new_parameters", {f"k{i}": i for i in range(65)}),
        ("created_by", "alice\nX-Remote-User: admin"),
    ],
)
def test_a_hostile_operation_is_refused_naming_the_field(field: str, value: Any) -> None:
    why = refused({**BASE, field: value}, OPERATION.input)
    assert field in why


@pytest.mark.parametrize(
    "items",
    [
        [],
        "op-1",
        [{"operation_id": "op-1"}],
        [{"operation_id": "op-1", "jedi_task_id": "1 2"}],
        [{"operation_id": "op-1", "jedi_task_id": 1}, {"operation_id": "op-1", "jedi_task_id": 2}],
        [{"operation_id": f"o{i}", "jedi_task_id": i + 1} for i in range(1001)],
    ],
)
def test_a_hostile_batch_is_refused(items: Any) -> None:
    why = refused({"batch_id": "b1", "operation": "pause", "items": items}, BATCH.input)
    assert "items" in why


def test_a_bulk_retry_is_refused() -> None:
    why = refused(
        {
            "batch_id": "b1",
            "operation": "retry_failures",
            "items": [{"operation_id": "o", "jedi_task_id": 1}],
        },
        BATCH.input,
    )
    assert "operation" in why
