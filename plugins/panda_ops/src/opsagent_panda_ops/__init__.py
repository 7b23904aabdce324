"""Capabilities ``panda_task_operation`` and ``panda_task_operations``: PanDA task
commands through panda-client's Python API, under the operator's OIDC token.

The monitor's task-operation pages publish them (pause, resume, retry failures,
increase attempts on one task; pause or resume many at once).  Each command goes
through panda-client in a bounded process with a private copy of the token -- no
shell, nothing sourced -- and its effect is read back; the monitor is told each
operation's state and Capcom gets a notice (see :mod:`.task_operation`,
:mod:`.task_operations`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from opsagent import Capability, Check, Digits, Job, hookimpl, pattern

from opsagent_panda_ops import checks, evgen, task_operation, task_operations
from opsagent_panda_ops.config import (
    BACKSTOP_SECONDS,
    OPERATION_SECONDS,
    PandaConfig,
    paced_seconds,
)

__all__ = [
    "BatchInput",
    "BatchItem",
    "EvgenInput",
    "OperationInput",
    "PandaConfig",
    "register_capabilities",
]
__version__ = "0.1.0"

OPERATIONS = ("increase_attempts", "retry_failures", "pause", "resume")
#: A PanDA task name (``group.EIC....`` or an output container ``.../``): no blank, no
#: control character, not starting with ``-`` or ``.``.
TASK_NAME = r"[A-Za-z0-9][A-Za-z0-9._+:/-]{0,254}"
#: The monitor's ids (UUIDs), which go into a URL path.
ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
OWNER = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,149}"
MAX_TASK_ID = 2**63 - 1
MAX_ITEMS = 1000
_PARAM = r"[A-Za-z_][A-Za-z0-9_]{0,63}"


def _task_id(_inst: object, attr: attrs.Attribute, value: str) -> None:
    if not 0 < int(value) <= MAX_TASK_ID:
        raise ValueError(f"expected a jediTaskID (1 to {MAX_TASK_ID}), got {value}")


def _scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= 4096 and value.isprintable()
    return value is None or isinstance(value, bool | int | float)


def _new_parameters(_inst: object, attr: attrs.Attribute, value: Any) -> None:
    """Task parameters to overwrite on a retry: a small flat object of plain values."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    if len(value) > 64:
        raise ValueError(f"expected at most 64 parameters, got {len(value)}")
    import re

    for key, item in value.items():
        if not isinstance(key, str) or not re.fullmatch(_PARAM, key):
            raise ValueError(f"{key!r} is not a task parameter name")
        ok = _scalar(item) or (
            isinstance(item, list) and len(item) <= 256 and all(_scalar(v) for v in item)
        )
        if not ok:
            raise ValueError(
                f"{key}: expected a string, number, boolean, null or a list of them "
                f"(printable, at most 4096 characters)"
            )


@attrs.frozen
class OperationInput:
    operation: str = attrs.field(
        validator=pattern("|".join(OPERATIONS), "one of " + ", ".join(OPERATIONS)),
        metadata={"description": "increase_attempts, retry_failures, pause or resume"},
    )
    task_name: str = attrs.field(
        validator=pattern(TASK_NAME, "a PanDA task name"),
        metadata={"description": "the task's name (shown in notices)"},
    )
    jedi_task_id: Digits = attrs.field(
        validator=_task_id, metadata={"description": "the PanDA jediTaskID (integer or digits)"}
    )
    operation_id: str | None = attrs.field(
        default=None,
        validator=pattern(ID, "an operation id"),
        metadata={"description": "the monitor's operation record (its state is posted)"},
    )
    increase: int = attrs.field(
        default=1,
        validator=[attrs.validators.ge(1), attrs.validators.le(100)],
        metadata={"description": "increase_attempts: by how many (1-100)"},
    )
    new_parameters: dict[str, Any] | None = attrs.field(
        default=None,
        validator=_new_parameters,
        metadata={"description": "retry_failures: task parameters to overwrite"},
    )
    created_by: str | None = attrs.field(
        default=None,
        validator=pattern(OWNER, "a user name"),
        metadata={"description": "who asked (shown in notices)"},
    )


@attrs.frozen
class BatchItem:
    operation_id: str = attrs.field(validator=pattern(ID, "an operation id"))
    jedi_task_id: Digits = attrs.field(validator=_task_id)
    task_name: str | None = attrs.field(
        default=None, validator=pattern(TASK_NAME, "a PanDA task name")
    )


def _items(_inst: object, attr: attrs.Attribute, value: list[BatchItem]) -> None:
    if not value:
        raise ValueError("expected at least one item")
    if len(value) > MAX_ITEMS:
        raise ValueError(f"expected at most {MAX_ITEMS} items, got {len(value)}")
    ids = [item.operation_id for item in value]
    if len(set(ids)) != len(ids):
        raise ValueError("each item needs an operation_id of its own")


@attrs.frozen
class BatchInput:
    batch_id: str = attrs.field(
        validator=pattern(ID, "a batch id"), metadata={"description": "the monitor's batch"}
    )
    operation: str = attrs.field(
        validator=pattern("pause|resume", "pause or resume"),
        metadata={"description": "pause or resume"},
    )
    items: list[BatchItem] = attrs.field(
        validator=_items,
        metadata={"description": "the tasks: operation_id, jedi_task_id, task_name each"},
    )
    created_by: str | None = attrs.field(default=None, validator=pattern(OWNER, "a user name"))


#: A catalogue task name (as ``submit_task``'s): no ``/``, no blank, no leading dot or dash.
CATALOGUE_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}"


@attrs.frozen
class EvgenInput:
    task_name: str = attrs.field(
        validator=pattern(CATALOGUE_NAME, "a catalogue task name"),
        metadata={"description": "ProdTask name in the catalogue (PCS)"},
    )
    panda_tasks_id: Digits | None = attrs.field(
        default=None, metadata={"description": "the catalogue's PandaTasks association id"}
    )
    owner: str | None = attrs.field(
        default=None,
        validator=pattern(OWNER, "a user name"),
        metadata={"description": "user the submission is recorded for (X-Remote-User)"},
    )


EVENTS = {"ok": "panda_task_operation_done", "error": "panda_task_operation_done"}
#: What an outcome the host made itself (the job killed at its time limit, a crash) says
#: in LEGACY's fields.
EVENT_DEFAULTS = {
    "timeout": {"status": "timeout", "accepted": False},
    "error": {"status": "failed", "accepted": False},
}
TIME_LIMIT = OPERATION_SECONDS + BACKSTOP_SECONDS


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(
        Capability(
            msg_type="panda_task_operation",
            input=OperationInput,
            doer=task_operation.operate,
            # A command PanDA answered before the job was cut short is not sent again.
            reconcile=task_operation.reconcile,
            events=EVENTS,
            event_defaults=EVENT_DEFAULTS,
            time_limit=TIME_LIMIT,
            credentials=("panda_oidc_token", "monitor_token"),
            dedup_key=lambda inp: f"{inp.operation}:{inp.jedi_task_id}",
            dedup_space="panda_op",
            action="panda_task_operation",
            # The monitor's action catalogue: reaches everyone, live by default.
            sublevel="high",
            live_default=True,
            echo=lambda inp: {
                "operation_id": inp.operation_id,
                "task_name": inp.task_name,
                "jedi_task_id": str(inp.jedi_task_id),
                "operation": inp.operation,
            },
            config=PandaConfig,
            description="Pause, resume, retry the failures of or increase the attempts of "
            "one PanDA task with the operator's token; a pause or resume is read back.",
            samples=(
                {
                    "operation": "pause",
                    "task_name": "group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1",
                    "jedi_task_id": 41000,
                    "operation_id": "3f1c2a9e-0d4b-4c1e-9a57-6b1f0c2d7e11",
                    "created_by": "wenauseic",
                },
            ),
        )
    )
    register(
        Capability(
            msg_type="panda_task_operations",
            input=BatchInput,
            doer=task_operations.operate,
            reconcile=task_operations.reconcile,
            events=EVENTS,
            event_defaults=EVENT_DEFAULTS,
            time_limit=TIME_LIMIT,
            # One second per item after the first: the pacing PanDA's rate limit needs.
            extra_time=lambda inp: paced_seconds(len(inp.items)),
            items=lambda inp: [
                {
                    "operation_id": it.operation_id,
                    "task_name": it.task_name,
                    "jedi_task_id": str(it.jedi_task_id),
                }
                for it in inp.items
            ],
            credentials=("panda_oidc_token", "monitor_token"),
            dedup_key=lambda inp: inp.batch_id,
            dedup_space="panda_bulk",
            action="panda_task_operation",
            # The monitor's action catalogue: reaches everyone, live by default.
            sublevel="high",
            live_default=True,
            echo=lambda inp: {"batch_id": inp.batch_id, "operation": inp.operation},
            config=PandaConfig,
            description="Pause or resume many PanDA tasks, one command a second, each read "
            "back; one panda_task_operation_done per task.",
            samples=(
                {
                    "batch_id": "b-20261203-1",
                    "operation": "pause",
                    "items": [
                        {"operation_id": "op-1", "jedi_task_id": 41000, "task_name": "t.1"},
                        {"operation_id": "op-2", "jedi_task_id": "41001", "task_name": "t.2"},
                    ],
                },
            ),
        )
    )
    _register_evgen(register)


def _register_evgen(register: Callable[[Capability], None]) -> None:
    register(
        Capability(
            msg_type="submit_evgen_task",
            input=EvgenInput,
            doer=evgen.submit,
            reconcile=evgen.reconcile,
            events={
                "ok": "prodtask_submitted",
                "unrecorded": "prodtask_submit_unrecorded",
                "error": "prodtask_submit_failed",
                "timeout": "prodtask_submit_failed",
            },
            time_limit=evgen.DEFAULT_TIME_LIMIT,
            time_limit_env="EPICPROD_SUBMIT_EVGEN_TIMEOUT",
            credentials=("panda_oidc_token", "evgen_x509_proxy", "pcs_token"),
            optional_credentials=("pcs_token",),
            dedup_key=lambda inp: inp.task_name,
            # One key space with submit_task: the two never run at once for a task.
            dedup_space="submit",
            action="evgen_task_submit",
            sublevel="high",
            live_default=True,
            echo=lambda inp: {"task_name": inp.task_name},
            config=evgen.EvgenConfig,
            description="Submit a catalogue task's EVGEN spec to PanDA through panda-client "
            "with the operator's token and the JLab proxy in the sandbox; record its id.",
            samples=(
                {
                    "task_name": "group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1",
                    "panda_tasks_id": 17,
                    "owner": "wenauseic",
                    "panda_task_name": "ignored",
                },
            ),
        )
    )


@hookimpl
def capability_checks(
    capability: Capability, job: Job, register: Callable[[Check], None], live: bool
) -> None:
    """``opsagent selftest``: the budget, the operator's token, the monitor and (with
    ``--live``) the PanDA server."""
    if capability.msg_type in ("panda_task_operation", "panda_task_operations"):
        checks.run_checks(job, register, live)
    elif capability.msg_type == "submit_evgen_task":
        checks.run_evgen_checks(job, register, live)
