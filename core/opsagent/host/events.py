"""The bodies the host sends: job events, replies and rejections (their fields: docs/wire.md)."""

from __future__ import annotations

import json
from typing import Any

from opsagent.capability import Capability
from opsagent.outcome import Outcome


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def job_event(
    cap: Capability,
    outcome: Outcome,
    echo: dict[str, Any],
    *,
    job_id: str,
    sender: str,
    namespace: str,
) -> dict[str, Any]:
    """The one terminal event of a job.

    The capability's declared event name for the outcome, the identifying fields of the
    input, the doer's data; ``ok``/``outcome`` always, ``reason`` when the outcome is not
    ``ok`` and ``error`` (the name ``rucio_snapshot_ready`` readers use) too when the job
    did not succeed (``skipped`` and ``warning`` succeed: ``ok: true``, a ``reason``).
    """
    body: dict[str, Any] = {
        "msg_type": cap.event_for(outcome.status),
        **echo,
        **cap.event_defaults.get(outcome.status, {}),
        **outcome.data,
    }
    body["ok"] = outcome.succeeded
    body["outcome"] = outcome.status
    if outcome.status != "ok":
        reason = outcome.reason or outcome.status
        body.setdefault("reason", reason)
        if not outcome.succeeded:
            body.setdefault("error", reason)
    body["request"] = cap.msg_type
    body["job_id"] = job_id
    body["sender"] = sender
    body["namespace"] = namespace
    return body


def job_events(
    cap: Capability,
    outcome: Outcome,
    echo: dict[str, Any],
    inp: Any,
    *,
    job_id: str,
    sender: str,
    namespace: str,
) -> list[dict[str, Any]]:
    """The terminal events of a job: one (:func:`job_event`), or one per item of a batch
    input (``Capability.items``), each with the item's fields and its own outcome."""
    items = cap.items_of(inp) if inp is not None else None
    if items is None:
        return [job_event(cap, outcome, echo, job_id=job_id, sender=sender, namespace=namespace)]
    return [
        job_event(
            cap,
            outcome.item(i),
            {**echo, **item},
            job_id=job_id,
            sender=sender,
            namespace=namespace,
        )
        for i, item in enumerate(items)
    ]


def rejection(
    request: str | None,
    reason: str,
    errors: list[str],
    *,
    sender: str,
    namespace: str,
    request_id: str | None = None,
    code: str = "invalid",
    echo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A structured refusal of a request that will not run.

    ``code`` is one of ``malformed``, ``unknown_msg_type``, ``unavailable``, ``invalid``,
    ``duplicate``, ``busy``, ``stopping``, ``request_id_reused`` (the ``request_id`` is
    another job's, of another msg_type or input), ``internal``.
    """
    body: dict[str, Any] = {
        "msg_type": "request_rejected",
        "request": request,
        "code": code,
        "reason": reason,
        "errors": errors,
        **(echo or {}),
        "sender": sender,
        "namespace": namespace,
    }
    if request_id is not None:
        body["request_id"] = request_id
    return body


def recorded(
    cap: Capability,
    outcome: Outcome,
    echo: dict[str, Any],
    *,
    job_id: str,
    request_id: str | None,
    sender: str,
    namespace: str,
    request: str | None = None,
    inp: Any = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """What the host published at the end of a job its journal records as finished: the
    rejection when the request was refused (its outcome carries the ``rejected`` code),
    else the job event -- or, for a batch input (``Capability.items``), its list of one
    event per item."""
    if "rejected" in outcome.data:
        return rejection(
            request or cap.msg_type,
            outcome.reason or "",
            [],
            sender=sender,
            namespace=namespace,
            request_id=request_id,
            code=outcome.data["rejected"],
            echo=echo,
        )
    bodies = job_events(cap, outcome, echo, inp, job_id=job_id, sender=sender, namespace=namespace)
    return bodies[0] if inp is None or cap.items_of(inp) is None else bodies
