"""Transports: how requests arrive and events leave.

:class:`~opsagent.transport.base.Transport` is the interface; ``stomp`` talks to
ActiveMQ through stomp.py, ``memory`` is an in-process broker with the same semantics
(individual acks, redelivery of unacknowledged messages) for tests and plugin authors.
"""

from opsagent.transport.base import Delivery, Transport, TransportError

__all__ = ["Delivery", "Transport", "TransportError"]
