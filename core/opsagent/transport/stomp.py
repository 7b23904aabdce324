"""ActiveMQ over STOMP with stomp.py.

- ``TCP_NODELAY`` on the socket after every connect: a consumer that acknowledges and
  then replies writes two small frames back to back, and without it Nagle's algorithm
  and delayed ACKs hold the reply ~40 ms on loopback.
- Heart-beats negotiated (Artemis drops idle connections).
- Reconnection is driven by the host's loop through :meth:`StompTransport.ensure`, with
  backoff; never from inside a stomp.py callback (that thread is the receiver).
- Two connections: one consumes and acknowledges, the other publishes events and
  replies.  ActiveMQ's producer flow control blocks a whole connection; on a shared one
  a burst of events stops the deliveries and acknowledgements too, and the broker stops
  dispatching (measured: a raw stomp.py consumer that acks and publishes on one
  connection stalls after ~14,000 messages; with two connections it does not).
- Events and acknowledgements of a batch of ended jobs go out as one socket write each
  (:meth:`StompTransport.send_many`, :meth:`StompTransport.ack_many`): the frames are
  encoded here (STOMP 1.2) and written through stomp.py's transport, under its lock.
- The sender's broker user is read from the one header the broker stamps, chosen from the
  CONNECTED frame's ``server`` or configured (``[broker] user_header``): ``JMSXUserID`` on
  both brokers (Artemis stamps ``_AMQ_VALIDATED_USER`` and writes it as ``JMSXUserID`` in
  STOMP frames: measured on 2.40); see :mod:`opsagent.host.access`.
- ``client-individual`` acknowledgement.  What the broker hands over unacknowledged is
  bounded per broker (the CONNECTED ``server``, or ``[broker] kind``): Classic counts
  messages (``activemq.prefetchSize``); Artemis counts bytes (``consumer-window-size`` =
  prefetch x ``[broker] window_bytes_per_message``; it reads ``activemq.prefetchSize``
  as bytes too, which held a prefetch of 2,000 to ~5 small requests).
- An exclusive consumer: Classic takes ``activemq.exclusive`` on the SUBSCRIBE; Artemis
  ignores it and makes the queue exclusive by its own configuration
  (``default-exclusive-queue`` in an ``address-setting``, or ``exclusive="true"`` on the
  queue): see docs/operations.md "Broker settings".
- An ack for a delivery of an earlier connection is not sent: the broker redelivers that
  message and the journal answers for it.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import stomp
from loguru import logger
from stomp.exception import StompException

from opsagent.host.config import BrokerConfig
from opsagent.transport.base import Delivery, OnDelivery, TransportError

SEND_TIMEOUT = 30  # seconds


def _escape(text: str) -> str:
    """STOMP 1.2 header escaping (backslash first); each ``in`` test is a C-speed scan,
    ~10x cheaper per frame than ``str.translate`` with a table (two frames per job)."""
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if ":" in text:
        text = text.replace(":", "\\c")
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    return text


def encode_frame(command: str, headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """One STOMP 1.2 frame: escaped headers, a ``content-length`` for a body, NUL."""
    head = command
    for k, v in headers.items():
        head += f"\n{_escape(k)}:{_escape(v)}"
    if body:
        head += f"\ncontent-length:{len(body)}"
    return (head + "\n\n").encode() + body + b"\0"


def broker_kind(server: str) -> str | None:
    """``classic`` or ``artemis`` from a CONNECTED frame's ``server``; None if neither."""
    name = server.lower()
    if "artemis" in name:
        return "artemis"
    if name.startswith("activemq"):
        return "classic"
    return None


def user_header_of(server: str) -> str | None:
    """The header in which the broker named by a CONNECTED ``server`` stamps the sender:
    ``JMSXUserID`` on both (Artemis's ``_AMQ_VALIDATED_USER`` reaches a STOMP client under
    that name; a client's own ``_AMQ_VALIDATED_USER`` header is dropped)."""
    return "JMSXUserID" if broker_kind(server) else None


def subscribe_headers(kind: str | None, prefetch: int, exclusive: bool,
                      window_bytes_per_message: int = 512) -> dict[str, str]:
    """The SUBSCRIBE headers that bound unacknowledged deliveries and ask for an exclusive
    consumer, in the dialect of the broker ``kind`` (``classic``, ``artemis``; None: an
    unknown broker gets Classic's, which Artemis would read as bytes)."""
    if kind == "artemis":
        # Exclusivity is the queue's own on Artemis (broker configuration).
        return {"consumer-window-size": str(prefetch * window_bytes_per_message)}
    headers = {"activemq.prefetchSize": str(prefetch)}
    if exclusive:
        headers["activemq.exclusive"] = "true"
    return headers


class _Listener(stomp.ConnectionListener):
    def __init__(self, owner: StompTransport, generation: int, on_delivery: OnDelivery) -> None:
        self.owner = owner
        self.generation = generation
        self.on_delivery = on_delivery
        #: Set once the CONNECTED frame was read (stomp.py returns from ``connect`` when
        #: it marks the connection up, before the listeners have seen the frame).
        self.connected = threading.Event()

    def on_connected(self, frame: Any) -> None:
        self.owner._connected_to(frame.headers.get("server", ""))
        self.connected.set()

    def on_message(self, frame: Any) -> None:
        headers = frame.headers
        user_header = self.owner.user_header
        delivery = Delivery(
            body=frame.body if isinstance(frame.body, bytes) else frame.body.encode(),
            message_id=headers.get("message-id", ""),
            redelivered=headers.get("redelivered") == "true",
            maybe_redelivered=self.owner.kind == "artemis",
            headers=headers,
            token=(
                headers.get("ack") or headers.get("message-id"),
                headers.get("subscription"),
                self.generation,
            ),
            user=(headers.get(user_header) or None) if user_header else None,
        )
        try:
            self.on_delivery(delivery)
        except Exception:  # noqa: BLE001 - an escaping exception ends stomp.py's receiver
            logger.exception("delivery callback raised; message left for redelivery")

    def on_disconnected(self) -> None:
        self.owner._lost(self.generation, "disconnected")

    def on_heartbeat_timeout(self) -> None:
        self.owner._lost(self.generation, "heart-beat timeout")

    def on_error(self, frame: Any) -> None:
        logger.warning("broker error frame: {}", frame.headers.get("message", frame.body))


def _no_delivery(delivery: Delivery) -> None:
    logger.warning("unexpected delivery on the publishing connection: {}", delivery.message_id)


class StompTransport:
    """The :class:`~opsagent.transport.base.Transport` for ActiveMQ (Classic or Artemis)."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        prefetch: int,
        client_id: str = "opsagent",
        connect_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.prefetch = prefetch
        self.client_id = client_id
        self.connect_timeout = connect_timeout
        self._conn: stomp.Connection12 | None = None
        self._pub: stomp.Connection12 | None = None
        self._generation = 0
        self._up = False
        self._intake = True
        self._lock = threading.Lock()
        self._failures = 0
        self._next_try = 0.0
        self.last_error = ""
        self.connects = 0
        #: The broker's ``server`` header, from the last CONNECTED frame.
        self.server = ""
        #: The header that carries the validated sender (None: unknown broker).
        self.user_header: str | None = None if config.user_header == "auto" else config.user_header
        #: ``classic``, ``artemis`` or None (unknown), from ``[broker] kind`` or ``server``.
        self.kind: str | None = None if config.kind == "auto" else config.kind

    def _connected_to(self, server: str) -> None:
        if server == self.server:
            return
        self.server = server
        if self.config.kind == "auto":
            self.kind = broker_kind(server)
        if self.config.user_header != "auto":
            return
        self.user_header = user_header_of(server)
        if self.user_header is None:
            logger.warning(
                "broker {!r} is neither ActiveMQ Classic nor Artemis: no validated sender is "
                "read, so capabilities with allow_users refuse every request; set [broker] "
                "user_header",
                server,
            )

    @property
    def connected(self) -> bool:
        conn, pub = self._conn, self._pub
        return (
            self._up
            and conn is not None
            and conn.is_connected()
            and pub is not None
            and pub.is_connected()
        )

    @property
    def receiving(self) -> bool:
        """Connected, stomp.py's receiver thread runs, and the broker was heard (a frame or
        a heart-beat) within twice the negotiated interval."""
        conn = self._conn
        if conn is None or not self.connected:
            return False
        receiver = getattr(conn.transport, "io_thread", None)
        if receiver is None or not receiver.is_alive():
            return False
        interval = conn.heartbeats[1] / 1000 if conn.heartbeats else 0
        heard = conn.received_heartbeat
        return not (interval and heard is not None and time.monotonic() - heard > 2 * interval)

    def _lost(self, generation: int, why: str) -> None:
        if generation == self._generation and self._up:
            self._up = False
            logger.warning("broker connection lost ({}); reconnecting from the main loop", why)

    def _failed(self, generation: int, what: str, exc: BaseException) -> None:
        """A send or an ack failed on a connection that looked up: it is not usable.  The
        main loop reconnects, and the broker redelivers what was left unacknowledged,
        which the journal answers; otherwise those messages would wait for a reconnection
        that nothing else brings about."""
        self._lost(generation, f"{what} failed: {type(exc).__name__}: {exc}")

    def _new_connection(self) -> stomp.Connection12:
        hb = self.config.heartbeat_ms
        conn = stomp.Connection12(
            host_and_ports=self.config.host_ports(),
            heartbeats=(hb, hb),
            auto_decode=False,
            reconnect_attempts_max=1,
            timeout=self.connect_timeout,
            try_loopback_connect=False,
        )
        if self.config.use_ssl:
            for hp in self.config.host_ports():
                conn.set_ssl(
                    for_hosts=[hp],
                    ca_certs=self.config.ca_certs,
                    ssl_version=ssl.PROTOCOL_TLS_CLIENT,
                )
        return conn

    def ensure(self, on_delivery: OnDelivery) -> bool:
        if self.connected:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        with self._lock:
            for old in (self._conn, self._pub):
                if old is not None:
                    self._drop(old)
            self._conn = self._pub = None
            self._generation += 1
            generation = self._generation
            conn = self._new_connection()
            listener = _Listener(self, generation, on_delivery)
            conn.set_listener("opsagent", listener)
            pub = self._new_connection()
            pub.set_listener("opsagent-pub", _Listener(self, generation, _no_delivery))
            try:
                for c, role in ((pub, "pub"), (conn, "sub")):
                    c.connect(
                        self.config.user,
                        self.config.password,
                        wait=True,
                        headers={"client-id": f"{self.client_id}-{role}-{generation}"},
                    )
                    self._nodelay(c)
                # The SUBSCRIBE's headers depend on the broker the CONNECTED frame named.
                listener.connected.wait(self.connect_timeout)
                # Usable before the subscription: the first delivery can reach a job, and
                # the job its end, before this method returns; its event and ack must go
                # out then (found: the first request of a burst left unacknowledged and
                # its event unpublished until the next reconnection).
                self._conn = conn
                self._pub = pub
                self._up = True
                if self._intake:
                    self._subscribe(conn)
            except (StompException, OSError, TimeoutError) as exc:
                self._up = False
                self._conn = self._pub = None
                self._failures += 1
                self._drop(conn)
                self._drop(pub)
                delay = min(self.config.reconnect_max_delay, 0.2 * 2 ** min(self._failures, 10))
                self._next_try = now + delay * (0.8 + 0.4 * random.random())  # noqa: S311
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "cannot connect to {} (try {}): {}; next try in {:.1f} s",
                    ", ".join(self.config.hosts),
                    self._failures,
                    self.last_error,
                    self._next_try - now,
                )
                return False
            self._failures = 0
            self.connects += 1
            if self.connects > 1:
                logger.info(
                    "broker connection restored (connection {}); subscribed again", self.connects
                )
            return True

    @property
    def failures(self) -> int:
        return self._failures

    @staticmethod
    def _drop(conn: stomp.Connection12) -> None:
        """Close a broken connection's socket without the DISCONNECT handshake.

        A graceful disconnect waits for the broker's receipt, which never comes from a
        connection that is wedged (e.g. blocked by producer flow control).
        """
        try:
            conn.transport.running = False
            conn.transport.disconnect_socket()
        except Exception:  # noqa: BLE001 - the old connection is already broken
            pass

    @staticmethod
    def _nodelay(conn: stomp.Connection12) -> None:
        sock = getattr(conn.transport, "socket", None)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A send that cannot complete within SEND_TIMEOUT (a wedged broker) fails,
            # so a worker never hangs forever; the message stays unacknowledged.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT, 0)
            )

    def _subscribe(self, conn: stomp.Connection12) -> None:
        headers = subscribe_headers(self.kind, self.prefetch, self.config.exclusive,
                                    self.config.window_bytes_per_message)
        if self.config.exclusive and self.kind == "artemis" and self.connects == 0:
            logger.info(
                "exclusive consumer on Artemis: the queue {} must be exclusive in the broker's "
                "configuration (default-exclusive-queue), Artemis ignores activemq.exclusive",
                self.config.queue,
            )
        conn.subscribe(self.config.queue, id="ops", ack="client-individual", headers=headers)

    def send(self, destination: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        conn, generation = self._pub, self._generation
        if conn is None or not self._up:
            raise TransportError("not connected to the broker")
        try:
            conn.send(
                destination, body, content_type="application/json", headers=dict(headers or {})
            )
        except (StompException, OSError) as exc:
            self._failed(generation, "send", exc)
            raise TransportError(f"send to {destination} failed: {exc}") from exc

    def ack(self, delivery: Delivery) -> bool:
        ack_id, subscription, generation = delivery.token
        conn = self._conn
        if conn is None or generation != self._generation or not self._up:
            return False
        try:
            conn.ack(ack_id)
            return True
        except (StompException, OSError) as exc:
            self._failed(generation, "ack", exc)
            return False

    def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        conn, generation = self._pub, self._generation
        if conn is None or not self._up:
            raise TransportError("not connected to the broker")
        data = b"".join(
            encode_frame("SEND", {"destination": dest, "content-type": "application/json"}, body)
            for dest, body in messages
        )
        try:
            conn.transport.send(data)
        except (StompException, OSError) as exc:
            self._failed(generation, "send", exc)
            raise TransportError(f"send of {len(messages)} message(s) failed: {exc}") from exc

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        conn = self._conn
        generation = self._generation
        if conn is None or not self._up:
            return [False] * len(deliveries)
        mine = [d.token[2] == generation for d in deliveries]
        data = b"".join(
            encode_frame("ACK", {"id": d.token[0]})
            for d, ok in zip(deliveries, mine, strict=True)
            if ok
        )
        if not data:
            return mine
        try:
            conn.transport.send(data)
        except (StompException, OSError) as exc:
            self._failed(generation, "ack", exc)
            return [False] * len(deliveries)
        return mine

    def stop_intake(self) -> None:
        self._intake = False
        conn = self._conn
        if conn is not None and self.connected:
            try:
                conn.unsubscribe(id="ops")
            except (StompException, OSError):
                pass

    def close(self) -> None:
        with self._lock:
            conns = (self._pub, self._conn)
            self._conn = self._pub = None
            self._up = False
            for conn in conns:
                if conn is not None:
                    try:
                        conn.disconnect()
                    except Exception:  # noqa: BLE001
                        pass
