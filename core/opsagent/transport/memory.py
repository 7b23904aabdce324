"""An in-process broker with the semantics the host relies on, for tests and plugin authors.

Queues deliver each message to one subscriber with individual acknowledgement; what a
subscriber has not acknowledged when it disconnects goes back to the head of the queue
with ``redelivered`` set.  Topics deliver to every subscriber.  Like a broker with
authentication, it stamps each message with the user that sent it (``user=`` of
:meth:`MemoryBroker.publish`, or the sending :class:`MemoryTransport`'s), whatever the
headers say.  Deliveries to one
connection run on that connection's own receiver thread, as with stomp.py.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import attrs

from opsagent.transport.base import Delivery, OnDelivery, TransportError


@attrs.define
class _Message:
    body: bytes
    message_id: str
    headers: dict[str, str]
    redelivered: bool = False
    user: str | None = None


class MemoryBroker:
    """The broker; create one per test and hand it to each :class:`MemoryTransport`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Message]] = {}
        self._consumers: dict[str, list[MemoryTransport]] = {}
        self._topic_subs: dict[str, list[Callable[[bytes, Mapping[str, str]], None]]] = {}
        self._queue_callbacks: dict[str, Callable[[bytes], None]] = {}
        self._ids = itertools.count(1)

    def publish(
        self,
        destination: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        user: str | None = None,
    ) -> str:
        """Send from outside any transport (a caller logged in as ``user``); returns the
        message id."""
        msg = _Message(body, f"ID:memory-{next(self._ids)}", dict(headers or {}), user=user)
        if destination.startswith("/topic/"):
            with self._lock:
                subs = list(self._topic_subs.get(destination, ()))
            for sub in subs:
                sub(body, msg.headers)
        else:
            with self._lock:
                callback = self._queue_callbacks.get(destination)
                if callback is None:
                    self._queues.setdefault(destination, deque()).append(msg)
            if callback is not None:
                callback(body)
            else:
                self._pump(destination)
        return msg.message_id

    def subscribe_queue_callback(self, destination: str, callback: Callable[[bytes], None]) -> None:
        """Consume a queue with automatic acknowledgement (a caller's reply queue)."""
        with self._lock:
            self._queue_callbacks[destination] = callback
            pending = self._queues.pop(destination, deque())
        for msg in pending:
            callback(msg.body)

    def subscribe_topic(
        self, destination: str, callback: Callable[[bytes, Mapping[str, str]], None]
    ) -> None:
        with self._lock:
            self._topic_subs.setdefault(destination, []).append(callback)

    def depth(self, destination: str) -> int:
        with self._lock:
            return len(self._queues.get(destination, ()))

    def _attach(self, destination: str, consumer: MemoryTransport) -> None:
        with self._lock:
            self._consumers.setdefault(destination, []).append(consumer)
        self._pump(destination)

    def _detach(self, destination: str, consumer: MemoryTransport, unacked: list[_Message]) -> None:
        with self._lock:
            if consumer in self._consumers.get(destination, []):
                self._consumers[destination].remove(consumer)
            q = self._queues.setdefault(destination, deque())
            for msg in reversed(unacked):
                msg.redelivered = True
                q.appendleft(msg)
        self._pump(destination)

    def _pump(self, destination: str) -> None:
        while True:
            with self._lock:
                q = self._queues.get(destination)
                consumers = [c for c in self._consumers.get(destination, []) if c._has_room()]
                if not q or not consumers:
                    return
                consumer = min(consumers, key=lambda c: len(c._unacked))
                msg = q.popleft()
                consumer._unacked[msg.message_id] = msg
            consumer._inbox.put(msg)


class MemoryTransport:
    """A connection to a :class:`MemoryBroker`, with the :class:`Transport` interface."""

    def __init__(
        self,
        broker: MemoryBroker,
        queue_name: str,
        *,
        prefetch: int = 1000,
        user: str | None = None,
    ) -> None:
        self.broker = broker
        self.user = user
        self.queue_name = queue_name
        self.prefetch = prefetch
        self._unacked: dict[str, _Message] = {}
        self._inbox: queue.Queue[_Message | None] = queue.Queue()
        self._generation = 0
        self._connected = False
        self._subscribed = False
        self._thread: threading.Thread | None = None
        self.sent: list[tuple[str, bytes]] = []

    def _has_room(self) -> bool:
        return self._subscribed and len(self._unacked) < self.prefetch

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def receiving(self) -> bool:
        thread = self._thread
        return self._connected and thread is not None and thread.is_alive()

    def ensure(self, on_delivery: OnDelivery) -> bool:
        if self._connected:
            return True
        self._generation += 1
        generation = self._generation
        inbox = self._inbox = queue.Queue()

        def receive() -> None:
            while True:
                msg = inbox.get()
                if msg is None:
                    return
                on_delivery(
                    Delivery(
                        msg.body,
                        msg.message_id,
                        msg.redelivered,
                        msg.headers,
                        token=(msg.message_id, generation),
                        user=msg.user,
                    )
                )

        self._thread = threading.Thread(target=receive, name="memory-receiver", daemon=True)
        self._thread.start()
        self._connected = True
        self._subscribed = True
        self.broker._attach(self.queue_name, self)
        return True

    def send(self, destination: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        if not self._connected:
            raise TransportError("not connected")
        self.broker.publish(destination, body, headers, user=self.user)

    def ack(self, delivery: Delivery) -> bool:
        message_id, generation = delivery.token
        if not self._connected or generation != self._generation:
            return False
        if self._unacked.pop(message_id, None) is None:
            return False
        self.broker._pump(self.queue_name)
        return True

    def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        for destination, body in messages:
            self.send(destination, body)

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return [self.ack(d) for d in deliveries]

    def stop_intake(self) -> None:
        self._subscribed = False

    def drop(self) -> None:
        """Simulate a lost connection: unacknowledged messages go back to the queue."""
        if not self._connected:
            return
        self._connected = False
        self._subscribed = False
        self._inbox.put(None)
        unacked = list(self._unacked.values())
        self._unacked.clear()
        self.broker._detach(self.queue_name, self, unacked)

    def close(self) -> None:
        self.drop()
