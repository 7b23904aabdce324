"""A small STOMP client for callers: publish a request, wait for its answer (``send``, ``ping``)."""

from __future__ import annotations

import json
import queue
import socket
import time
import uuid
from typing import Any

import stomp

from opsagent.host.config import BrokerConfig

_LOST = "\0lost"


class _Answers(stomp.ConnectionListener):
    def __init__(self, answers: queue.Queue[dict[str, Any]]) -> None:
        self.answers = answers
        self.receipts: queue.Queue[str] = queue.Queue()

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers.get("receipt-id", ""))

    def on_disconnected(self) -> None:
        self.receipts.put(_LOST)

    def on_message(self, frame: Any) -> None:
        try:
            self.answers.put(json.loads(frame.body))
        except ValueError:
            pass


class Client:
    """Publishes requests and waits for the reply on a private queue."""

    def __init__(self, broker: BrokerConfig, *, connect_tries: int = 5) -> None:
        self.broker = broker
        self.reply_to = f"/queue/opsagent.reply.{uuid.uuid4().hex}"
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._conn = self._connect(connect_tries)

    def _connect(self, tries: int) -> stomp.Connection12:
        delay = 0.2
        last: Exception | None = None
        for attempt in range(tries):
            conn = stomp.Connection12(
                self.broker.host_ports(),
                heartbeats=(0, 0),
                auto_decode=False,
                reconnect_attempts_max=1,
                timeout=5,
                try_loopback_connect=False,
            )
            if self.broker.use_ssl:
                for hp in self.broker.host_ports():
                    conn.set_ssl(for_hosts=[hp], ca_certs=self.broker.ca_certs)
            self._listener = _Answers(self._answers)
            conn.set_listener("client", self._listener)
            try:
                conn.connect(self.broker.user, self.broker.password, wait=True)
                conn.transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.subscribe(self.reply_to, id="reply", ack="auto")
                return conn
            except Exception as exc:  # noqa: BLE001 - retried, then raised
                last = exc
                if attempt + 1 < tries:
                    time.sleep(delay)
                    delay = min(delay * 2, 10)
        raise ConnectionError(
            f"broker {', '.join(self.broker.hosts)} unreachable after {tries} tries: {last}"
        )

    def publish(
        self,
        body: dict[str, Any],
        destination: str | None = None,
        *,
        confirm: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Send ``body``; with ``confirm``, wait until the broker has it (a STOMP receipt).

        Raises :class:`ConnectionError` when the connection fails or no receipt comes.
        """
        headers = {"persistent": "true"}
        receipt = uuid.uuid4().hex
        if confirm:
            headers["receipt"] = receipt
        try:
            self._conn.send(
                destination or self.broker.queue,
                json.dumps(body).encode(),
                content_type="application/json",
                headers=headers,
            )
        except Exception as exc:  # noqa: BLE001 - stomp.py raises several kinds
            raise ConnectionError(f"publish failed: {exc}") from exc
        if not confirm:
            return
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self._listener.receipts.get(timeout=left)
            except queue.Empty:
                break
            if got == receipt:
                return
            if got == _LOST:
                raise ConnectionError("the connection was lost before the broker confirmed")
        raise ConnectionError(f"the broker did not confirm the message within {timeout:g} s")

    def request(self, body: dict[str, Any]) -> str:
        """Publish ``body`` with a fresh ``request_id`` and this client's ``reply_to``."""
        request_id = body.setdefault("request_id", uuid.uuid4().hex)
        body.setdefault("reply_to", self.reply_to)
        self.publish(body)
        return str(request_id)

    def wait(self, request_id: str | None, timeout: float) -> dict[str, Any] | None:
        """The next answer (for ``request_id`` when given), or ``None`` at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                answer = self._answers.get(timeout=left)
            except queue.Empty:
                return None
            if request_id is None or answer.get("request_id", answer.get("job_id")) in (
                None,
                request_id,
            ):
                return answer

    @property
    def connected(self) -> bool:
        return bool(self._conn.is_connected())

    def reconnect(self, tries: int = 1) -> None:
        """Connect again, to the same reply queue (answers sent meanwhile wait there)."""
        self.close()
        self._conn = self._connect(tries)

    def close(self) -> None:
        try:
            self._conn.disconnect()
        except Exception:  # noqa: BLE001
            pass
