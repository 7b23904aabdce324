"""``panda_task_operations``: a bulk pause or resume (LEGACY.md, Other handlers 3).

Every item is set ``running`` and one Capcom notice ``requested`` is posted; the
commands go out one a second (PanDA rate-limits them); each item gets its final state
and, through ``Capability.items``, its own ``panda_task_operation_done`` event with the
``batch_id``; a last notice ``completed`` gives the counts.  The job's time limit grows
with the batch (``120 + ceil(n - 1)`` for the operation, ``+30`` backstop), and an item
never reached ends ``timeout`` -- at the deadline, or when the host stopped mid-batch
and the request came back (:func:`reconcile`): every item gets exactly one terminal
event, and no command is sent twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from opsagent import Job, JobFailed, Outcome

from opsagent_panda_ops import operations as ops
from opsagent_panda_ops.monitor import Monitor

ORDER = ("verified", "unverified", "failed", "timeout")


def items_of(inp: Any) -> list[ops.Item]:
    return [
        ops.Item(
            key=it.operation_id,
            task_id=int(it.jedi_task_id),
            task_name=it.task_name,
            operation_id=it.operation_id,
        )
        for it in inp.items
    ]


def _finish(
    inp: Any, job: Job, monitor: Monitor, items: Sequence[ops.Item], results: list[ops.Result]
) -> Outcome:
    """Each item's state to the monitor, the ``completed`` notice; the job's outcome with
    one outcome per item."""
    for item, result in zip(items, results, strict=True):
        monitor.state(
            item.operation_id,
            ops.STATE_OF[result.status],
            result.diagnostic,
            result.observed_status,
            ops.evidence(item, result, job, operation=inp.operation, batch_id=inp.batch_id),
        )
    counts = Counter(r.status for r in results)
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ORDER)
    all_verified = counts.get("verified", 0) == len(results)
    monitor.notice(
        severity="info" if all_verified else "warning",
        title=f"PanDA bulk {inp.operation} of {len(results)} tasks completed",
        detail=summary,
        url_path=f"/panda/task-operations/?batch={inp.batch_id}",
        dedup_key=f"panda-task-bulk:{inp.batch_id}:completed",
    )
    per_item = [ops.outcome_of(r) for r in results]
    data = {"counts": {s: counts.get(s, 0) for s in ORDER}}
    if all_verified:
        job_outcome = Outcome.ok(summary=summary, **data)
    elif counts.get("failed", 0) or counts.get("timeout", 0):
        job_outcome = Outcome.error(f"bulk {inp.operation}: {summary}", **data)
    else:
        job_outcome = Outcome.unverified(f"bulk {inp.operation}: {summary}", **data)
    return job_outcome.with_items(per_item)


def operate(inp: Any, job: Job) -> Outcome:
    """Pause or resume every task of the batch, paced, each verified by a read-back."""
    started = time.monotonic()
    cfg = ops.settings(job)
    budget = cfg.budget(job.time_limit)
    monitor = ops.monitor_of(job, cfg)
    items = items_of(inp)
    try:
        token = ops.load_token(job, budget)
    except JobFailed as exc:
        return _finish(inp, job, monitor, items, [ops.Result("failed", exc.reason)] * len(items))
    for item in items:
        monitor.state(item.operation_id, "running", f"queued in batch {inp.batch_id}")
    monitor.notice(
        severity="info",
        title=f"PanDA bulk {inp.operation} of {len(items)} tasks requested",
        detail=", ".join(str(i.task_id) for i in items[:50]) + (" ..." if len(items) > 50 else ""),
        url_path=f"/panda/task-operations/?batch={inp.batch_id}",
        dedup_key=f"panda-task-bulk:{inp.batch_id}:requested",
    )
    seen, how = ops.send(inp.operation, items, job, cfg, token, started + budget)
    results = [ops.result_of(inp.operation, seen.get(i.key), how, budget) for i in items]
    return _finish(inp, job, monitor, items, results)


def reconcile(inp: Any, job: Job) -> Outcome | None:
    """A batch cut short (the host stopped or died mid-batch): no command is sent again.
    The items whose command went out keep PanDA's noted answer, their status read back
    from PanDA; the others end ``timeout``.  ``None`` (run the batch) when no command
    had gone out."""
    items = items_of(inp)
    noted = ops.recalled(job, items)
    if not any(s.reached for s in noted.values()):
        return None
    cfg = ops.settings(job)
    budget = cfg.budget(job.time_limit)
    noted, how = ops.look_again(inp.operation, items, noted, job, cfg)
    results = []
    for item in items:
        state = noted.get(item.key)
        if state is None or not state.reached:
            results.append(
                ops.Result(
                    "timeout",
                    f"operation timed out after {budget:g}s: the batch was cut short "
                    f"before this task's command was sent; send it again",
                )
            )
        else:
            results.append(ops.result_of(inp.operation, state, how, budget))
    job.log.warning(
        "an earlier attempt of batch {} was cut short after {} of {} commands; reporting "
        "what PanDA answered and ending the rest timeout",
        inp.batch_id,
        sum(1 for s in noted.values() if s.reached),
        len(items),
    )
    return _finish(inp, job, ops.monitor_of(job, cfg), items, results)
