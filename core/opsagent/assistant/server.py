"""The MCP server: tools listed from the declarations, calls put on the host's queue.

A call of a capability's tool is checked here as the host checks it (the same
``$.path: message`` errors), sent with a fresh ``request_id`` and this server's private
``reply_to``, and waited for up to ``[mcp] wait_seconds`` while progress is reported;
the answer -- the job's terminal event or its rejection -- is the tool's result
(``isError`` unless the job succeeded).  A call that stops waiting first answers where
the request stands; ``opsagent_request_status`` tells the rest later, from the answers
this server received or, failing that, from the host's journal (the ``request_status``
control request, which ``allow_users`` governs like any other).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
import attrs
import mcp_types as types
from loguru import logger
from mcp.server.lowlevel import Server

from opsagent.assistant import tools
from opsagent.assistant.link import Answers, Link
from opsagent.capability import Capability
from opsagent.schema import InputError

#: How long ``opsagent_request_status`` waits for the host's answer.
STATUS_WAIT = 10.0


@attrs.frozen
class Settings:
    namespace: str
    wait_seconds: float
    progress_seconds: float


def _result(body: dict[str, Any], *, error: bool | None = None) -> types.CallToolResult:
    """A tool result carrying ``body`` (structured, and as JSON text for older clients);
    an error unless ``body`` is a job event of a job that succeeded or a pending state."""
    if error is None:
        error = body.get("msg_type") == "request_rejected" or body.get("ok") is False
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body, indent=1))],
        structured_content=body,
        is_error=error,
    )


def _pending(request_id: str, msg_type: str, state: str, message: str) -> types.CallToolResult:
    body = {"state": state, "request_id": request_id, "request": msg_type, "message": message}
    return _result(body, error=False)


class Assistant:
    """The tools of one ``opsagent mcp`` process and what a call of each does."""

    def __init__(self, caps: list[Capability], link: Link, answers: Answers, settings: Settings):
        self.caps = {cap.msg_type: cap for cap in caps}
        self.link = link
        self.answers = answers
        self.settings = settings
        #: The msg_type of each request this server sent (the last ``answers.limit``).
        self.sent: dict[str, str] = {}

    def tool_list(self) -> list[types.Tool]:
        out = [
            types.Tool(
                name=cap.msg_type,
                description=cap.description or cap.msg_type,
                input_schema=tools.input_schema(cap),
                output_schema=tools.output_schema(cap),
            )
            for cap in self.caps.values()
        ]
        out.append(
            types.Tool(
                name=tools.STATUS_TOOL,
                description=tools.STATUS_DESCRIPTION,
                input_schema=tools.STATUS_INPUT,
                output_schema=tools.output_schema(None),
                annotations=types.ToolAnnotations(read_only_hint=True),
            )
        )
        return out

    # -- handlers ----------------------------------------------------------------------

    async def on_list_tools(
        self, _ctx: Any, _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tool_list())

    async def on_call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name == tools.STATUS_TOOL:
            return await self.status(params.arguments or {})
        cap = self.caps.get(params.name)
        if cap is None:
            return _result(
                {
                    "msg_type": "request_rejected",
                    "request": params.name,
                    "code": "unknown_msg_type",
                    "reason": f"no tool {params.name!r}; this server offers: "
                    + ", ".join([*self.caps, tools.STATUS_TOOL]),
                    "errors": [],
                }
            )
        return await self.call(ctx, cap, params.arguments)

    # -- a capability's call -----------------------------------------------------------

    async def call(
        self, ctx: Any, cap: Capability, arguments: Mapping[str, Any] | None
    ) -> types.CallToolResult:
        try:
            body = tools.request_body(cap, arguments)
        except InputError as exc:
            return _result(
                {
                    "msg_type": "request_rejected",
                    "request": cap.msg_type,
                    "code": "invalid",
                    "reason": f"invalid input for {cap.msg_type}: {exc}",
                    "errors": exc.errors,
                }
            )
        request_id = uuid.uuid4().hex
        body.update(
            request_id=request_id, reply_to=self.link.reply_to, namespace=self.settings.namespace
        )
        try:
            await self._publish(body)
        except ConnectionError as exc:
            return _result(
                {
                    "msg_type": "request_rejected",
                    "request": cap.msg_type,
                    "code": "not_sent",
                    "reason": f"{cap.msg_type} was not sent: {exc}; try again later",
                    "errors": [],
                    "request_id": request_id,
                }
            )
        self.sent[request_id] = cap.msg_type
        if len(self.sent) > self.answers.limit:
            del self.sent[next(iter(self.sent))]
        logger.info("sent {} request {}", cap.msg_type, request_id)
        answer = await self._wait(ctx, cap, request_id)
        if answer is None:
            return _pending(
                request_id,
                cap.msg_type,
                "sent",
                f"still running: {cap.msg_type} request id {request_id} has not ended after "
                f"{self.settings.wait_seconds:g} s (its time limit is {cap.time_limit:g} s); "
                f"ask {tools.STATUS_TOOL} with this request_id later",
            )
        return _result(answer)

    async def _publish(self, body: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self.link.publish, body)

    async def _wait(self, ctx: Any, cap: Capability, request_id: str) -> dict[str, Any] | None:
        """The answer to ``request_id`` within ``wait_seconds``, reporting progress (seconds
        waited of the capability's time limit) every ``progress_seconds``."""
        started = time.monotonic()
        deadline = started + self.settings.wait_seconds
        while (left := deadline - time.monotonic()) > 0:
            answer = await self.answers.wait(request_id, min(left, self.settings.progress_seconds))
            if answer is not None:
                return answer
            waited = time.monotonic() - started
            await ctx.session.report_progress(
                waited,
                cap.time_limit,
                f"{cap.msg_type} request {request_id}: waiting for its end, {waited:.1f} s "
                f"(time limit {cap.time_limit:g} s)",
            )
        return None

    # -- opsagent_request_status -------------------------------------------------------

    async def status(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        request_id = arguments.get("request_id")
        try:
            tools.check_request_id(request_id)
        except InputError as exc:
            return _result(
                {
                    "msg_type": "request_rejected",
                    "request": tools.STATUS_TOOL,
                    "code": "invalid",
                    "reason": f"invalid input for {tools.STATUS_TOOL}: {exc}",
                    "errors": exc.errors,
                }
            )
        assert isinstance(request_id, str)
        seen = self.answers.seen.get(request_id)
        if seen is not None:
            return _result(seen)
        ask = uuid.uuid4().hex
        body = {
            "msg_type": "request_status",
            "namespace": self.settings.namespace,
            "request_id": ask,
            "reply_to": self.link.reply_to,
            "job_id": request_id,
        }
        try:
            await self._publish(body)
        except ConnectionError as exc:
            return _result(self._unanswered(request_id, f"not sent: {exc}"))
        answer = await self.answers.wait(ask, STATUS_WAIT)
        self.answers.seen.pop(ask, None)
        if answer is None:
            return _result(
                self._unanswered(request_id, f"the host did not answer within {STATUS_WAIT:g} s")
            )
        if answer.get("msg_type") == "request_rejected":
            return _result(answer)
        event = answer.get("event")
        if isinstance(event, dict):
            return _result(event)
        state = str(answer.get("state", "unknown"))
        msg_type = str(answer.get("request") or self.sent.get(request_id, ""))
        if state == "unknown":
            message = (
                f"the host has no record of request {request_id}: not received yet, refused "
                f"before it was recorded, or pruned from its journal (after 7 days)"
            )
        else:
            message = (
                f"{msg_type} request {request_id} is {state} (attempt {answer.get('attempts')})"
            )
        return _pending(request_id, msg_type, state, message)

    def _unanswered(self, request_id: str, why: str) -> dict[str, Any]:
        return {
            "msg_type": "request_rejected",
            "request": tools.STATUS_TOOL,
            "code": "no_answer",
            "reason": f"cannot tell where request {request_id} stands: {why}",
            "errors": [],
            "request_id": request_id,
        }


INSTRUCTIONS = (
    "Each tool but opsagent_request_status asks the opsagent host to run one production "
    "operation; the host holds the credentials and answers with the job's terminal event. "
    "A call waits a while for it; a long job answers 'still running' with its request_id: "
    "ask opsagent_request_status later rather than calling the tool again."
)


def server(assistant: Assistant) -> Server[Any]:
    return Server(
        "opsagent",
        instructions=INSTRUCTIONS,
        on_list_tools=assistant.on_list_tools,
        on_call_tool=assistant.on_call_tool,
    )


async def serve_stdio(assistant: Assistant) -> None:
    from mcp.server.stdio import stdio_server

    assistant.link.start(asyncio.get_running_loop())
    app = server(assistant)
    async with stdio_server() as (read, write):
        await app.run(read, write, app.create_initialization_options())


async def serve_http(assistant: Assistant, address: str, port: int) -> None:
    import uvicorn

    assistant.link.start(asyncio.get_running_loop())
    app = server(assistant).streamable_http_app(host=address)
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    host, bound = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    # The one line a supervisor (or a test) waits for; stdout stays unused.
    print(
        f"opsagent mcp: streamable HTTP on http://{shown}:{bound}/mcp", file=sys.stderr, flush=True
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])
