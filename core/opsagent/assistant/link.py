"""The MCP server's one connection to the broker: requests out, answers in.

Answers arrive on a private reply queue (a random name under ``/queue/opsagent.reply.``)
on stomp.py's thread; a pump thread hands each to the event loop, where
:class:`Answers` keeps it by request id and wakes whoever waits for it.  A lost
connection is made again to the same queue, where answers sent meanwhile wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any

from loguru import logger

from opsagent.cli.client import Client
from opsagent.host.config import BrokerConfig


class Answers:
    """The answers this server received, by request id (the last ``limit``), and the
    calls waiting for one.  Used on the event loop only."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.seen: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._waiting: dict[str, asyncio.Event] = {}

    def put(self, body: dict[str, Any]) -> None:
        request_id = body.get("request_id", body.get("job_id"))
        if not isinstance(request_id, str):
            return
        self.seen[request_id] = body
        self.seen.move_to_end(request_id)
        while len(self.seen) > self.limit:
            self.seen.popitem(last=False)
        event = self._waiting.get(request_id)
        if event is not None:
            event.set()

    async def wait(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """The answer to ``request_id``, or ``None`` after ``timeout`` seconds."""
        if request_id in self.seen:
            return self.seen[request_id]
        event = self._waiting.setdefault(request_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(request_id, None)
        return self.seen.get(request_id)


class Link:
    """The broker connection of the MCP server, logged in as its own broker user."""

    def __init__(self, broker: BrokerConfig, answers: Answers, *, connect_tries: int = 5) -> None:
        self.client = Client(broker, connect_tries=connect_tries)
        self.reply_to = self.client.reply_to
        self.answers = answers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._publishing = threading.Lock()
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._run, name="mcp-answers", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pump.start()

    def _run(self) -> None:
        assert self._loop is not None
        while not self._stop.is_set():
            answer = self.client.wait(None, 1.0)
            if answer is not None:
                self._loop.call_soon_threadsafe(self.answers.put, answer)
            elif not self.client.connected and not self._stop.is_set():
                self._reconnect()

    def _reconnect(self) -> None:
        with self._lock:
            if self.client.connected:
                return
            try:
                self.client.reconnect(tries=3)
                logger.info("connected to the broker again")
            except ConnectionError as exc:
                logger.warning("broker connection lost: {}", exc)

    def publish(self, body: dict[str, Any]) -> None:
        """Send ``body`` to the host's queue, confirmed by the broker (blocking: call it from
        a worker thread); one more try after connecting again.  :class:`ConnectionError`
        when both fail."""
        # One at a time: the client matches each receipt to the publication waiting for it.
        with self._publishing:
            try:
                self.client.publish(body, confirm=True)
            except ConnectionError:
                self._reconnect()
                self.client.publish(body, confirm=True)

    def close(self) -> None:
        self._stop.set()
        self.client.close()
