"""``panda_task_operation``: one command (pause, resume, retry failures, increase
attempts) on one PanDA task, its effect read back, the monitor told (LEGACY.md,
Other handlers 2).

The monitor hears ``running`` and a Capcom notice ``requested`` before PanDA is
called, then the final state (``verified``, ``accepted`` for a command that is not read
back, ``unverified``, ``failed``, ``timeout``) and a notice of the outcome.  Without an
``operation_id`` nothing is posted: there is no operation page to update.
"""

from __future__ import annotations

import time
from typing import Any

from opsagent import Job, JobFailed, Outcome

from opsagent_panda_ops import operations as ops
from opsagent_panda_ops.monitor import Monitor


def _item(inp: Any) -> ops.Item:
    return ops.Item(
        key=inp.operation_id or "task",
        task_id=int(inp.jedi_task_id),
        task_name=inp.task_name,
        operation_id=inp.operation_id,
        increase=inp.increase,
        new_parameters=inp.new_parameters,
    )


def _notice(monitor: Monitor, inp: Any, stage: str, detail: str, severity: str = "info") -> None:
    if not inp.operation_id:
        return
    monitor.notice(
        severity=severity,
        title=f"PanDA {inp.operation} of task {inp.jedi_task_id}: {stage}",
        detail=detail,
        url_path=f"/panda/task-operations/{inp.operation_id}/",
        dedup_key=f"panda-task-operation:{inp.operation_id}:{stage}",
    )


def _report(inp: Any, job: Job, monitor: Monitor, item: ops.Item, result: ops.Result) -> Outcome:
    """Tell the monitor how it ended; the job's outcome."""
    monitor.state(
        inp.operation_id,
        ops.STATE_OF[result.status],
        result.diagnostic,
        result.observed_status,
        ops.evidence(item, result, job, operation=inp.operation),
    )
    ok = result.status in ("verified", "done")
    _notice(monitor, inp, result.status, result.diagnostic, "info" if ok else "warning")
    return ops.outcome_of(result)


def operate(inp: Any, job: Job) -> Outcome:
    """Run ``inp.operation`` on task ``inp.jedi_task_id`` with the operator's token."""
    started = time.monotonic()
    cfg = ops.settings(job)
    budget = cfg.budget(job.time_limit)
    monitor = ops.monitor_of(job, cfg)
    item = _item(inp)
    try:
        token = ops.load_token(job, budget)
    except JobFailed as exc:
        result = ops.Result("failed", exc.reason)
        return _report(inp, job, monitor, item, result)
    who = f" by {inp.created_by}" if inp.created_by else ""
    monitor.state(inp.operation_id, "running", f"sending {inp.operation} to PanDA{who}")
    _notice(monitor, inp, "requested", f"{inp.task_name} ({inp.jedi_task_id}){who}")
    seen, how = ops.send(inp.operation, [item], job, cfg, token, started + budget)
    result = ops.result_of(inp.operation, seen.get(item.key), how, budget)
    return _report(inp, job, monitor, item, result)


def reconcile(inp: Any, job: Job) -> Outcome | None:
    """An interrupted operation whose command went out is never sent again: its noted
    answer, and for a pause or resume the task's status read back from PanDA.  ``None``
    (run it) when the command had not gone out."""
    item = _item(inp)
    noted = ops.recalled(job, [item])
    if item.key not in noted or not noted[item.key].reached:
        return None
    cfg = ops.settings(job)
    noted, how = ops.look_again(inp.operation, [item], noted, job, cfg)
    result = ops.result_of(inp.operation, noted[item.key], how, cfg.budget(job.time_limit))
    job.log.warning(
        "an earlier attempt of this job sent {} for task {} and was cut short; reporting "
        "what PanDA answered instead of sending it again",
        inp.operation,
        inp.jedi_task_id,
    )
    return _report(inp, job, ops.monitor_of(job, cfg), item, result)
