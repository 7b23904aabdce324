"""What an assistant sees: one tool per exposed capability, and ``opsagent_request_status``.

A capability's tool is its declaration read aloud: name = msg_type, description = the
declaration's, input schema = what ``opsagent schema <msg_type>`` prints, output schema =
the capability's terminal event (docs/wire.md), its rejection, or -- when the call
stopped waiting first -- where the request stands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from opsagent.capability import Capability
from opsagent.outcome import STATUSES
from opsagent.schema import InputError, json_schema, shown, structure

#: The second tool: where a request stands, from the answers seen or the host's journal.
STATUS_TOOL = "opsagent_request_status"
#: Fields of a request the MCP server sets itself; a caller that sets one is refused.
ROUTING = ("request_id", "reply_to", "namespace", "sender")


class ExposeError(ValueError):
    """An ``[mcp] expose`` entry the MCP server refuses to start with."""


def input_schema(cap: Capability) -> dict[str, Any]:
    """The JSON Schema of ``cap``'s request (``opsagent schema`` prints the same)."""
    schema = json_schema(cap.input, title=cap.msg_type)
    schema["properties"] = {"msg_type": {"const": cap.msg_type}, **schema["properties"]}
    if cap.description:
        schema["description"] = cap.description
    return schema


_EVENT_FIELDS: dict[str, Any] = {
    "ok": {"type": "boolean", "description": "true when the job succeeded"},
    "outcome": {"enum": sorted(STATUSES)},
    "reason": {"type": "string", "description": "why, when the outcome is not ok"},
    "error": {"type": "string", "description": "the reason, when the job did not succeed"},
    "job_id": {"type": "string", "description": "the request_id"},
    "sender": {"type": "string"},
    "namespace": {"type": "string"},
}

REJECTION: dict[str, Any] = {
    "type": "object",
    "title": "request_rejected",
    "description": "The request was refused and did not run (bad input, forbidden, busy...).",
    "properties": {
        "msg_type": {"const": "request_rejected"},
        "request": {"type": ["string", "null"]},
        "code": {"type": "string"},
        "reason": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "string"}},
        "request_id": {"type": "string"},
    },
    "required": ["msg_type", "code", "reason"],
}

PENDING: dict[str, Any] = {
    "type": "object",
    "title": "pending",
    "description": "No end yet: ask opsagent_request_status with request_id later.",
    "properties": {
        "state": {"enum": ["sent", "accepted", "running", "unknown"]},
        "request_id": {"type": "string"},
        "request": {"type": "string"},
        "message": {"type": "string"},
    },
    "required": ["state", "request_id"],
}


def event_schema(cap: Capability | None) -> dict[str, Any]:
    """The terminal event of ``cap``'s jobs (of any capability's when ``None``)."""
    names = sorted(set(cap.events.values())) if cap is not None else None
    props: dict[str, Any] = {
        "msg_type": {"enum": names} if names else {"type": "string"},
        **_EVENT_FIELDS,
        "request": {"const": cap.msg_type} if cap is not None else {"type": "string"},
    }
    return {
        "type": "object",
        "title": "job event",
        "description": "The job's terminal event, as the host published it; the "
        "capability's own fields besides these.",
        "properties": props,
        "required": ["msg_type", "ok", "outcome", "request", "job_id"],
    }


def output_schema(cap: Capability | None) -> dict[str, Any]:
    """What a call of ``cap``'s tool (``None``: of ``opsagent_request_status``) returns."""
    return {"type": "object", "anyOf": [event_schema(cap), REJECTION, PENDING]}


STATUS_INPUT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": STATUS_TOOL,
    "type": "object",
    "properties": {
        "request_id": {
            "type": "string",
            "pattern": "^(?:[A-Za-z0-9][A-Za-z0-9_.:-]{0,127})$",
            "description": "the request_id a tool call answered with",
        }
    },
    "required": ["request_id"],
}

STATUS_DESCRIPTION = (
    "Where a request made through this server stands: its terminal event when it has "
    "ended (from the answers this server received, else from the host's journal), or its "
    "state (accepted, running; unknown when the host has no record of it)."
)


def exposed(capabilities: Mapping[str, Capability], names: Iterable[str]) -> list[Capability]:
    """The capabilities ``[mcp] expose`` names, in its order; an unknown name or a
    control capability is an :class:`ExposeError` saying what to do."""
    out: list[Capability] = []
    for name in names:
        cap = capabilities.get(name)
        if cap is None:
            known = ", ".join(sorted(m for m, c in capabilities.items() if not c.control))
            raise ExposeError(
                f"mcp.expose: no capability {name!r} is installed (see `opsagent plugins`); "
                f"known: {known}"
            )
        if cap.control:
            raise ExposeError(
                f"mcp.expose: {name} is a control capability of the host and is never "
                f"offered to an assistant; remove it"
            )
        if name == STATUS_TOOL:
            raise ExposeError(f"mcp.expose: {name} is the name of the MCP server's own tool")
        if cap not in out:
            out.append(cap)
    return out


def request_body(cap: Capability, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request ``arguments`` make, checked as the host checks it; :class:`InputError`
    (``$.path: message`` lines) when the host would refuse it."""
    args = dict(arguments or {})
    errors = [
        f"$.{key}: set by the MCP server, not by the caller; leave it out"
        for key in ROUTING
        if key in args
    ]
    if args.get("msg_type", cap.msg_type) != cap.msg_type:
        errors.append(f"$.msg_type: expected {cap.msg_type!r} or nothing, got {args['msg_type']!r}")
    if errors:
        raise InputError(errors)
    args.pop("msg_type", None)
    structure(args, cap.input)
    return {"msg_type": cap.msg_type, **args}


def check_request_id(value: Any) -> None:
    """:class:`InputError` unless ``value`` is a request_id (``opsagent_request_status``)."""
    from opsagent.host.envelope import REQUEST_ID_PATTERN

    if value is None:
        raise InputError(["$.request_id: required field missing"])
    if not isinstance(value, str) or not re.fullmatch(REQUEST_ID_PATTERN, value):
        raise InputError([f"$.request_id: expected a request_id, got {shown(value)}"])
