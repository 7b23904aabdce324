"""Calling a doer: the one code path shared by host threads, child processes and ``opsagent do``."""

from __future__ import annotations

from typing import Any

from loguru import logger

from opsagent.capability import Capability
from opsagent.job import Job
from opsagent.outcome import JobFailed, Outcome


def call(cap: Capability, inp: Any, job: Job) -> Outcome:
    """Run ``cap.doer`` and turn whatever happens into an :class:`Outcome`.

    A job that may have been interrupted is first given to ``cap.reconcile`` when the
    capability declares one: its outcome, if it returns one, is the job's, and the doer
    does not run.
    """
    if job.interrupted and cap.reconcile is not None:
        try:
            found = cap.reconcile(inp, job)
        except JobFailed as exc:
            return Outcome.error(exc.reason, **exc.data)
        except Exception as exc:  # noqa: BLE001 - not knowing is an error, not a re-run
            logger.opt(exception=True).bind(job_id=job.id, msg_type=cap.msg_type).error(
                "reconcile of {} raised", cap.msg_type
            )
            return Outcome.error(
                f"{cap.msg_type} may have been interrupted and the check whether it had "
                f"already taken effect failed ({type(exc).__name__}: {exc}); it was not run "
                f"again: check by hand before sending it again"
            )
        if found is not None:
            return _checked(cap, found)
        job.log.info("reconciled: the interrupted run had no effect; running it again")
    try:
        result = cap.doer(inp, job)
    except JobFailed as exc:
        return Outcome.error(exc.reason, **exc.data)
    except Exception as exc:  # noqa: BLE001 - a sick doer never takes the host down
        logger.opt(exception=True).bind(job_id=job.id, msg_type=cap.msg_type).error(
            "doer of {} raised", cap.msg_type
        )
        return Outcome.error(f"{cap.msg_type} failed unexpectedly: {type(exc).__name__}: {exc}")
    return _checked(cap, result)


def _checked(cap: Capability, result: Any) -> Outcome:
    if result is None:
        return Outcome.ok()
    if not isinstance(result, Outcome):
        return Outcome.error(
            f"{cap.msg_type} returned {type(result).__name__}, not an Outcome (a plugin bug)"
        )
    return result
