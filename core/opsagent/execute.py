"""Calling a doer: the one code path shared by host threads, child processes and ``opsagent do``."""

from __future__ import annotations

from typing import Any

from loguru import logger

from opsagent.capability import Capability
from opsagent.job import Job
from opsagent.outcome import JobFailed, Outcome


def call(cap: Capability, inp: Any, job: Job) -> Outcome:
    """Run ``cap.doer`` and turn whatever happens into an :class:`Outcome`."""
    try:
        result = cap.doer(inp, job)
    except JobFailed as exc:
        return Outcome.error(exc.reason, **exc.data)
    except Exception as exc:  # noqa: BLE001 - a sick doer never takes the host down
        logger.opt(exception=True).bind(job_id=job.id, msg_type=cap.msg_type).error(
            "doer of {} raised", cap.msg_type
        )
        return Outcome.error(f"{cap.msg_type} failed unexpectedly: {type(exc).__name__}: {exc}")
    if result is None:
        return Outcome.ok()
    if not isinstance(result, Outcome):
        return Outcome.error(
            f"{cap.msg_type} returned {type(result).__name__}, not an Outcome (a plugin bug)"
        )
    return result
