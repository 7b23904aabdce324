"""What the host says about itself: one snapshot read by systemd's ``STATUS=``, the
monitor's heartbeats and the metrics endpoint, and one record per ended job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

#: operational_state values of the monitor (docs/wire.md), plus STOPPING while draining.
STARTING, READY, PROCESSING, STOPPING, EXITED = (
    "STARTING",
    "READY",
    "PROCESSING",
    "STOPPING",
    "EXITED",
)
#: The host's phase between STARTING and STOPPING; shown as READY or PROCESSING.
RUNNING = "RUNNING"


@attrs.frozen
class Snapshot:
    """The host at one moment."""

    state: str
    broker_connected: bool
    capabilities: tuple[str, ...]
    unavailable: Mapping[str, str]
    broken: tuple[str, ...]
    #: Accepted jobs not yet ended (queued or running), by msg_type.
    in_flight: Mapping[str, int]
    #: Jobs waiting in a capability's local queue, by msg_type.
    queued: Mapping[str, int]
    #: Unix expiry time of each credential that has one.
    credential_expiry: Mapping[str, float] = attrs.Factory(dict)
    #: Each renewed credential's state (:class:`opsagent.credentials.renewal.RenewalState`).
    renewal: Mapping[str, Mapping[str, Any]] = attrs.Factory(dict)
    #: The dispatcher's counters (received, accepted, each rejection code...).
    counts: Mapping[str, int] = attrs.Factory(dict)
    #: Why the journal cannot be written (a full disk), None when it can.
    journal_error: str | None = None

    @property
    def jobs(self) -> int:
        return sum(self.in_flight.values())

    @property
    def renewal_failing(self) -> dict[str, str]:
        """Credentials whose last renewal failed, with why."""
        return {
            name: str(state.get("last_error"))
            for name, state in self.renewal.items()
            if state.get("consecutive_failures")
        }

    @property
    def healthy(self) -> bool:
        """Broker up, journal writable, nothing broken, every capability available (the
        monitor's OK)."""
        return (
            self.broker_connected
            and self.journal_error is None
            and not self.broken
            and not self.unavailable
            and not self.renewal_failing
        )

    def line(self) -> str:
        """One line for ``systemctl status`` and the monitor's ``description``."""
        broker = "broker connected" if self.broker_connected else "broker DISCONNECTED"
        offered = [c for c in self.capabilities if c not in self.unavailable]
        parts = [
            f"{self.state.lower()}",
            broker,
            f"{len(offered)} capabilities",
        ]
        if self.journal_error is not None:
            parts.append(f"JOURNAL NOT WRITABLE ({self.journal_error})")
        if self.unavailable:
            parts.append("unavailable: " + ", ".join(sorted(self.unavailable)))
        if self.broken:
            parts.append("broken: " + ", ".join(self.broken))
        failing = self.renewal_failing
        if failing:
            shown = ", ".join(f"{n} ({why})" for n, why in sorted(failing.items()))
            parts.append(f"RENEWAL FAILING: {shown}")
        queued = sum(self.queued.values())
        parts.append(f"{self.jobs} job{'s' if self.jobs != 1 else ''} in flight ({queued} queued)")
        return "; ".join(parts)


@attrs.frozen
class JobEnd:
    """One job that ended, as observers (metrics, the monitor's action log,
    notifications) see it; its reason and data already scrubbed."""

    job_id: str
    msg_type: str
    status: str
    duration: float
    reason: str | None = None
    echo: Mapping[str, Any] = attrs.Factory(dict)
    module: str = ""
    #: What the monitor's action record says (``Capability.action``, ``subject_type``...):
    #: the action id (empty: the msg_type), its subject, who asked.
    action: str = ""
    subject_type: str = ""
    subject_key: str = ""
    username: str = ""
    sublevel: str = "low"
    live_default: bool = False
    #: Fields of the outcome's data the record carries (``Capability.counts``).
    counts: Mapping[str, Any] = attrs.Factory(dict)
    #: The record's level name when not the outcome's (``WARNING`` for a deliberate
    #: ``shutdown``).
    levelname: str = ""
    #: Whether ``duration`` was measured (a job); a control request's record has none.
    timed: bool = True
    #: The doer's data fields (those of the terminal event).
    data: Mapping[str, Any] = attrs.Factory(dict)
    #: The terminal event's name (``msg_type`` of the event).
    event: str = ""
    #: Capcom notices the job asked to be posted (``Outcome.notices``).
    notices: tuple[Any, ...] = ()
    #: Whether the monitor gets an action record of this end (``Capability.record``).
    recorded: bool = True


def counts_of(counts: tuple[str, ...] | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an outcome's ``data`` an action record carries: those named, or
    (``None``) every number."""
    if counts is None:
        return {
            k: v for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
    return {k: data[k] for k in counts if k in data}


def job_end(
    cap: Any,
    inp: Any,
    outcome: Any,
    *,
    job_id: str,
    duration: float,
    echo: Mapping[str, Any],
    username: str | None = None,
    levelname: str = "",
    timed: bool = True,
) -> JobEnd:
    """The :class:`JobEnd` of one job of capability ``cap`` (its declaration says what
    the action record names)."""
    try:
        subject_key = cap.subject_of(inp)
    except Exception:  # noqa: BLE001 - a record without its subject beats none
        subject_key = ""
    if username is None:
        try:
            username = cap.username_of(inp)
        except Exception:  # noqa: BLE001
            username = ""
    return JobEnd(
        job_id=job_id,
        msg_type=cap.msg_type,
        status=outcome.status,
        duration=duration,
        reason=outcome.reason,
        echo=echo,
        module=cap.entry_point,
        action=cap.action_id,
        subject_type=cap.subject_type,
        subject_key=subject_key,
        username=username,
        sublevel=cap.sublevel,
        live_default=cap.live_default,
        counts=counts_of(cap.counts, outcome.data),
        levelname=levelname,
        timed=timed,
        data=outcome.data,
        event=cap.event_for(outcome.status),
        notices=outcome.notices,
        recorded=cap.record == "always" or not outcome.succeeded,
    )
