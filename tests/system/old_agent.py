"""A stand-in for the old agent on the broker, for the cut-over guide's test: it consumes
the queue as the old agent did (a plain consumer, ``ack=auto``, not exclusive) and answers
``health_ping`` with a ``pong`` as the old agent did (docs/wire.md).  Nothing else of the
old agent runs here; the point is how the broker shares the queue between the two."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import stomp

AGENT = "prodops-agent-wenauseic-7"  # BaseAgent: <agent_type>-agent-<user>-<N>


class OldAgent:
    def __init__(self, broker: dict[str, str], queue: str) -> None:
        self.pings = 0
        self._lock = threading.Lock()
        self.conn = stomp.Connection12(
            [(broker["ACTIVEMQ_HOST"], int(broker["ACTIVEMQ_PORT"]))], auto_decode=False
        )
        outer = self

        class Listener(stomp.ConnectionListener):
            def on_message(self, frame: Any) -> None:
                outer._on_message(frame)

        self.conn.set_listener("", Listener())
        self.conn.connect(broker["ACTIVEMQ_USER"], broker["ACTIVEMQ_PASSWORD"], wait=True)
        self.conn.subscribe(queue, id="old-agent", ack="auto")

    def _on_message(self, frame: Any) -> None:
        try:
            body = json.loads(frame.body)
        except ValueError:
            return
        if body.get("msg_type") == "health_ping" and body.get("reply_to"):
            with self._lock:
                self.pings += 1
            pong = {"msg_type": "pong", "agent": AGENT, "pid": os.getpid()}
            self.conn.send(body["reply_to"], json.dumps(pong))

    def close(self) -> None:
        self.conn.disconnect()
