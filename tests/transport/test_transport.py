"""StompTransport against the real broker: usable from the first delivery, and a failed
send or ack makes it reconnect so that the broker redelivers."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import pytest
import stomp
from opsagent.host.config import BrokerConfig
from opsagent.transport.base import Delivery, TransportError
from opsagent.transport.stomp import StompTransport
from support import login

pytestmark = pytest.mark.broker


def config(broker: dict[str, str], queue: str) -> BrokerConfig:
    return BrokerConfig(hosts=[f"{broker['ACTIVEMQ_HOST']}:{broker['ACTIVEMQ_PORT']}"],
                        **login(broker, "host"), queue=queue,
                        topic=f"/topic/test.{uuid.uuid4().hex[:12]}",
                        heartbeat_ms=10000, reconnect_max_delay=0.5)


def raw(broker: dict[str, str], listener: Any = None) -> stomp.Connection12:
    conn = stomp.Connection12([(broker["ACTIVEMQ_HOST"], int(broker["ACTIVEMQ_PORT"]))],
                              auto_decode=False)
    if listener is not None:
        conn.set_listener("l", listener)
    conn.connect(*login(broker, "web").values(), wait=True)
    return conn


class Collector(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.cond = threading.Condition()

    def on_message(self, frame: Any) -> None:
        with self.cond:
            self.bodies.append(frame.body)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 10) -> list[bytes]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.bodies) >= n, timeout)
            return list(self.bodies)


def remaining(broker: dict[str, str], queue: str, wait: float = 1.0) -> int:
    """How many messages are still on ``queue`` (consumed and acknowledged here)."""
    got = Collector()
    conn = raw(broker, got)
    conn.subscribe(queue, id="drain", ack="auto")
    time.sleep(wait)
    conn.disconnect()
    return len(got.bodies)


class SlowToSubscribe(StompTransport):
    """The scheduler's worst case: deliveries are handled, and their jobs end, while the
    thread that subscribed has not yet returned from :meth:`StompTransport.ensure`."""

    def _subscribe(self, conn: stomp.Connection12) -> None:
        super()._subscribe(conn)
        time.sleep(0.5)


def test_a_delivery_handled_while_ensure_still_runs_can_publish_and_ack(
    broker: dict[str, str],
) -> None:
    queue = f"/queue/test.{uuid.uuid4().hex[:12]}"
    cfg = config(broker, queue)
    events = Collector()
    watcher = raw(broker, events)
    watcher.subscribe(cfg.topic, id="t", ack="auto")
    sender = raw(broker)
    for i in range(3):
        sender.send(queue, f'{{"n": {i}}}'.encode())
    sender.disconnect()
    transport = SlowToSubscribe(cfg, prefetch=10)
    results: list[tuple[str, Any]] = []

    def on_delivery(delivery: Delivery) -> None:
        # What the completion thread does at a job's end, here at once.
        try:
            transport.send_many([(cfg.topic, delivery.body)])
            results.append(("sent", transport.ack_many([delivery])))
        except TransportError as exc:
            results.append(("failed", str(exc)))

    try:
        assert transport.ensure(on_delivery)
        assert results == [("sent", [True])] * 3
        assert sorted(events.wait_for(3)) == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    finally:
        transport.close()
        watcher.disconnect()
    assert remaining(broker, queue) == 0, "every delivery was acknowledged"


def test_a_failed_publish_makes_the_transport_reconnect_and_the_broker_redeliver(
    broker: dict[str, str],
) -> None:
    queue = f"/queue/test.{uuid.uuid4().hex[:12]}"
    cfg = config(broker, queue)
    deliveries: list[Delivery] = []
    arrived = threading.Event()

    def on_delivery(delivery: Delivery) -> None:
        deliveries.append(delivery)
        arrived.set()

    transport = StompTransport(cfg, prefetch=10)
    assert transport.ensure(on_delivery)
    try:
        sender = raw(broker)
        sender.send(queue, b'{"n": 1}')
        sender.disconnect()
        assert arrived.wait(10)
        first = deliveries[0]
        assert not first.redelivered
        # Writes to the publishing connection fail while nothing tells its receiver (as
        # when a send times out against a wedged broker): its socket, for writing only,
        # is one that refuses to be written to.
        pub = transport._pub
        assert pub is not None
        real = pub.transport.socket
        with socket.create_server(("127.0.0.1", 0)) as server:
            broken = socket.create_connection(server.getsockname())
            peer, _ = server.accept()
        broken.shutdown(socket.SHUT_WR)
        pub.transport.socket = broken
        try:
            with pytest.raises(TransportError):
                transport.send_many([(cfg.topic, b"{}")])
            assert not transport.connected, "a failed send must not leave the connection in use"
        finally:
            pub.transport.socket = real
            broken.close()
            peer.close()
        # The host's loop reconnects; the message, never acknowledged, comes back.
        arrived.clear()
        end = time.monotonic() + 10
        while not transport.ensure(on_delivery) and time.monotonic() < end:
            time.sleep(0.1)
        assert transport.connected
        assert arrived.wait(10)
        again = deliveries[-1]
        assert again.body == first.body and again.redelivered
        assert transport.ack_many([again]) == [True]
        assert transport.ack_many([first]) == [False], "an ack of the old connection is not sent"
    finally:
        transport.close()
    assert remaining(broker, queue) == 0
