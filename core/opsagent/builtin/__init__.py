"""The host's own capabilities, registered through the same hook as every plugin."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from opsagent.builtin.credentials import MSG_TYPE as CREDENTIAL_CHECK
from opsagent.builtin.credentials import ExpiryInput, check_expiry
from opsagent.builtin.prune import PruneConfig, PruneInput, prune_cache
from opsagent.capability import Capability
from opsagent.hookspecs import hookimpl
from opsagent.host.control import Control
from opsagent.host.envelope import REPLY_TO_PATTERN, REQUEST_ID_PATTERN
from opsagent.job import Job
from opsagent.outcome import Outcome
from opsagent.schema import pattern


@attrs.frozen
class PingInput:
    reply_to: str = attrs.field(validator=pattern(REPLY_TO_PATTERN, "a destination"))


@attrs.frozen
class StatusInput:
    job_id: str = attrs.field(validator=pattern(REQUEST_ID_PATTERN, "a request_id"))


@attrs.frozen
class ShutdownInput:
    reason: str = "shutdown requested"


def _control(job: Job) -> Control:
    control = job.config
    if not isinstance(control, Control):
        raise TypeError(f"{job.msg_type} runs only in the host (its config is {control!r})")
    return control


def ping(_inp: PingInput, job: Job) -> Outcome:
    control = _control(job)
    return Outcome.ok(agent=control.instance, pid=control.pid)


def request_status(inp: StatusInput, job: Job) -> Outcome:
    return Outcome.ok(**_control(job).status(inp.job_id))


def shutdown(inp: ShutdownInput, job: Job) -> Outcome:
    control = _control(job)
    control.request_shutdown(inp.reason)
    return Outcome.ok(agent=control.instance, pid=control.pid)


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(
        Capability(
            msg_type="health_ping",
            input=PingInput,
            doer=ping,
            control=True,
            events={"ok": "pong", "error": "pong"},
            time_limit=1,
            description="Liveness: pong to reply_to at once, even when every worker is busy.",
            samples=({"reply_to": "/queue/opsagent.cli.selftest"},),
        )
    )
    register(
        Capability(
            msg_type="shutdown",
            input=ShutdownInput,
            doer=shutdown,
            control=True,
            events={"ok": "shutdown_ack", "error": "shutdown_ack"},
            # The old agent's record of a deliberate stop, naming the broker user who asked.
            action="agent_shutdown",
            sublevel="high",
            live_default=True,
            time_limit=1,
            description="Deliberate stop: stop intake, drain, exit 100 (systemd leaves it down).",
            samples=({},),
        )
    )
    register(
        Capability(
            msg_type="request_status",
            input=StatusInput,
            doer=request_status,
            control=True,
            events={"ok": "request_status", "error": "request_status"},
            time_limit=1,
            description="Where the job of request job_id stands, from the host's journal: "
            "state unknown, accepted, running or finished, and once finished the terminal "
            "event the host published (what opsagent mcp's opsagent_request_status asks).",
            samples=({"job_id": "a1b2c3"},),
        )
    )
    register(
        Capability(
            msg_type="prune_cache",
            input=PruneInput,
            config=PruneConfig,
            doer=prune_cache,
            events={"ok": "cache_pruned", "error": "cache_prune_failed"},
            # One prune at a time, whatever its input.
            dedup_key=lambda _inp: "cache",
            time_limit=3600,
            queue_limit=2,
            description="Remove job directories and leftovers older than older_than_days in "
            "the cache's areas (panda-logs unless configured); never follows a link, never "
            "touches what a job holds (flock). Scheduled daily ([scheduling] prune_cache).",
            samples=({"dry_run": True},),
        )
    )
    register(
        Capability(
            msg_type=CREDENTIAL_CHECK,
            input=ExpiryInput,
            doer=check_expiry,
            # In the host: its config is the host's view of its credentials.
            isolation="thread",
            events={
                "ok": "credential_expiry_checked",
                "warning": "credential_expiry_checked",
                "error": "credential_expiry_check_failed",
            },
            dedup_key=lambda _inp: "all",
            time_limit=60,
            sublevel="high",
            live_default=True,
            description="Every credential this host knows (configured or declared by a "
            "capability), checked as opsagent selftest checks it: "
            "{credentials: [{credential, status, days_left}]}; outcome ok, warning (one "
            "expires within warning_days) or error (expired, missing, refused).",
            samples=({}, {"warning_days": 7}),
        )
    )
