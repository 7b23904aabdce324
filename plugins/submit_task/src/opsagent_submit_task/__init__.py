"""Capability ``submit_task``: submit a catalogue production task to PanDA, record its id.

A person clicks Submit; the catalogue (PCS) publishes ``submit_task``; this capability
fetches the task's ``prun`` command from the catalogue, runs it -- as an argument vector,
never through a shell, with only the options a production command uses -- in a fresh
private sandbox (off the shared cache) with a copy of the operator's PanDA token, notes
``jediTaskID=<n>`` as soon as prun prints it and records it in the catalogue.  A task is
never submitted twice: see :mod:`opsagent_submit_task.submit`.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from opsagent import Capability, Check, Job, hookimpl, pattern

from opsagent_submit_task.config import DEFAULT_TIME_LIMIT, SubmitConfig
from opsagent_submit_task.submit import reconcile, submit

__all__ = ["SubmitConfig", "SubmitInput", "register_capabilities", "submit"]
__version__ = "0.1.0"

#: Composed catalogue names (``group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1``):
#: no path separator, no blank, no control character, no leading dot.
TASK_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}"
#: A monitor user name (Django: letters, digits and @ . + - _).
OWNER = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,149}"


@attrs.frozen
class SubmitInput:
    task_name: str = attrs.field(
        validator=pattern(TASK_NAME, "a catalogue task name"),
        metadata={"description": "ProdTask name in the catalogue (PCS)"},
    )
    owner: str | None = attrs.field(
        default=None,
        validator=pattern(OWNER, "a user name"),
        metadata={"description": "user the submission is recorded for (X-Remote-User)"},
    )


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(
        Capability(
            msg_type="submit_task",
            input=SubmitInput,
            doer=submit,
            # An attempt cut short may have submitted: look (notes, then PanDA) first.
            reconcile=reconcile,
            events={
                "ok": "prodtask_submitted",
                "unrecorded": "prodtask_submit_unrecorded",
                "error": "prodtask_submit_failed",
                "timeout": "prodtask_submit_failed",
            },
            time_limit=DEFAULT_TIME_LIMIT,
            time_limit_env="EPICPROD_SUBMIT_TIMEOUT",
            credentials=("panda_oidc_token", "pcs_token"),
            # From the monitor's own host X-Remote-User is enough to record a submission.
            optional_credentials=("pcs_token",),
            dedup_key=lambda inp: inp.task_name,
            # One key space with submit_evgen_task: the two never run at once for a task.
            dedup_space="submit",
            echo=lambda inp: {"task_name": inp.task_name},
            # The old agent's action record (username: owner).
            action="task_submit",
            subject_type="campaign_task",
            subject_key=lambda inp: inp.task_name,
            sublevel="high",
            live_default=True,
            config=SubmitConfig,
            programs=("prun",),
            description="Submit a catalogue production task to PanDA with the operator's token "
            "(prun, never a shell), record its jediTaskID, never twice.",
            samples=(
                {
                    "task_name": "group.EIC.26.06.0.epic_craterlake.p3001.e1.s1.r1",
                    "owner": "wenauseic",
                },
            ),
        )
    )


@hookimpl
def capability_checks(capability: Capability, job: Job, register: Callable[[Check], None]) -> None:
    """``opsagent selftest``: the inner budgets fit the time limit this host gives a job."""
    if capability.msg_type != "submit_task":
        return
    cfg = job.config if job.config is not None else SubmitConfig()
    try:
        cfg.check_time_limit(job.time_limit)
    except ValueError as exc:
        register(Check.fail("budget", str(exc)))
    else:
        total = sum(seconds for _, seconds in cfg.budget())
        register(Check.ok("budget", f"{total:g} s of inner budgets within {job.time_limit:g} s"))
