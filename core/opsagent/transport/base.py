"""The transport interface the host is written against."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs


class TransportError(RuntimeError):
    """Sending or acknowledging failed (the connection is down)."""


@attrs.frozen
class Delivery:
    """One message as delivered; ``token`` is the transport's own acknowledgement handle.

    ``user`` is the broker user that sent it, as the broker stamped it (never a field of
    the body, never a header the broker passes through from the client); ``None`` when
    the broker stamped none.

    ``maybe_redelivered`` is true when the message may have been delivered before even
    though ``redelivered`` says not: on ActiveMQ Artemis a message that a SIGKILLed
    consumer had started came back to the standby once in 300 without the flag
    (tests/system/test_standby.py), so there the host cannot trust its absence.
    """

    body: bytes
    message_id: str
    redelivered: bool = False
    headers: Mapping[str, str] = attrs.Factory(dict)
    token: Any = None
    user: str | None = None
    maybe_redelivered: bool = False


OnDelivery = Callable[[Delivery], None]


class Transport(Protocol):
    """What the host needs from a broker connection.

    ``ensure`` is called from the host's own loop (never from a delivery callback) and
    (re)connects and (re)subscribes when needed.  Deliveries arrive on the transport's
    receiver thread through the callback given to ``ensure``.
    """

    def ensure(self, on_delivery: OnDelivery) -> bool:
        """Connect and subscribe if not connected; True when connected and subscribed."""

    @property
    def connected(self) -> bool: ...

    @property
    def receiving(self) -> bool:
        """Connected, and the receiver thread runs and still hears from the broker.

        False while connected means the host is deaf: the main loop then withholds
        systemd's ``WATCHDOG=1`` so that the host is restarted.
        """

    def send(self, destination: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Send one message; raises :class:`TransportError` when not connected."""

    def ack(self, delivery: Delivery) -> bool:
        """Acknowledge ``delivery``; False when its connection is gone (it will be redelivered)."""

    def send_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Send (destination, body) pairs in order, as one write where the transport can;
        raises :class:`TransportError` when not connected (some may have gone out)."""

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Acknowledge each of ``deliveries`` (one write where the transport can); per
        delivery, False when its connection is gone."""

    def stop_intake(self) -> None:
        """Unsubscribe: no new deliveries; unacknowledged ones stay with the broker."""

    def close(self) -> None:
        """Disconnect; unacknowledged messages are redelivered to another consumer."""
