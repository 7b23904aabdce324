"""What is in flight: accepted jobs from acceptance to their end, and the dedup keys they hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from opsagent.capability import Capability
from opsagent.outcome import Outcome
from opsagent.transport.base import Delivery

#: The "delivery" of a job the host asked for itself (a chain's step): there is no
#: message to acknowledge.
INTERNAL = Delivery(body=b"", message_id="internal")


class Flag:
    """A one-way flag with ``threading.Event``'s ``set``/``is_set``, without its Condition.

    One is made per accepted message; readers poll it (the job runners check it every
    few tens of milliseconds), so nothing needs to wait on it.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@attrs.define(eq=False)
class Ticket:
    """One accepted job.  ``delivery`` is the latest message that asked for it: a
    redelivery, or the same request sent again, while the job is here joins it (see
    :meth:`Ledger.rejoin`)."""

    job_id: str
    cap: Capability
    inp: Any
    body: dict[str, Any]
    echo: dict[str, Any]
    dedup_key: str | None
    reply_to: str | None
    delivery: Delivery
    attempt: int = 1
    #: An earlier run may have been cut short (see ``Capability.reconcile``).
    interrupted: bool = False
    accepted_at: float = attrs.Factory(time.monotonic)
    started_at: float | None = None
    cancel: Flag = attrs.Factory(Flag)
    ended: bool = False
    #: Earlier messages of this job, acknowledged with its end (those of an earlier
    #: connection cannot be: the broker has already redelivered them).
    joined: list[Delivery] = attrs.Factory(list)
    #: Other destinations the same request asked to be answered at (a caller's retry
    #: from a new connection): each gets the end's reply too.
    also_reply_to: list[str] = attrs.Factory(list)
    #: The end's event as published, once the job has ended.
    answer: tuple[bytes, ...] | None = None
    #: The end's replies have been taken for sending (:meth:`Ledger.destinations`): a
    #: copy joining after that is answered by whoever joins it.
    replied: bool = False
    #: :func:`opsagent.host.journal.digest` of ``inp``: what a copy of the request must match.
    digest: str | None = None
    #: Told the outcome once the job's end is handed to completion (a chain waiting
    #: for its step).
    on_end: Callable[[Outcome], None] | None = None
    #: The end goes out neither as an event nor as an action record
    #: (``Capability.quiet``); it is journaled and acknowledged all the same.
    quiet: bool = False

    @property
    def internal(self) -> bool:
        """A job the host asked for itself: no message to acknowledge."""
        return self.delivery is INTERNAL

    def other_than(self, msg_type: str | None, digest: str | None) -> bool:
        """True when a request for ``msg_type`` with an input of ``digest`` is other work
        than this job's, under the same id (``None``: not compared)."""
        if msg_type is not None and msg_type != self.cap.msg_type:
            return True
        return None not in (digest, self.digest) and digest != self.digest

    @property
    def reply_destinations(self) -> list[str]:
        first = [self.reply_to] if self.reply_to else []
        return first + [d for d in self.also_reply_to if d != self.reply_to]

    @property
    def deliveries(self) -> list[Delivery]:
        return [self.delivery, *self.joined]


class Ledger:
    """Thread-safe registry of tickets; ``claim`` makes a job's end happen exactly once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets: dict[str, Ticket] = {}
        self._keys: dict[str, str] = {}
        self._running = 0
        self.idle = threading.Event()
        self.idle.set()

    def admit(self, ticket: Ticket) -> Ticket | None:
        """Hold ``ticket``'s dedup key; return the ticket already holding it, if any."""
        with self._lock:
            if ticket.dedup_key is not None:
                holder = self._keys.get(ticket.dedup_key)
                if holder is not None:
                    return self._tickets[holder]
                self._keys[ticket.dedup_key] = ticket.job_id
            self._tickets[ticket.job_id] = ticket
            self.idle.clear()
            return None

    def rejoin(
        self,
        job_id: str,
        delivery: Delivery,
        reply_to: str | None = None,
        *,
        msg_type: str | None = None,
        digest: str | None = None,
    ) -> tuple[Ticket | None, tuple[bytes, ...] | None]:
        """If ``job_id`` is here, ``delivery`` (the same message redelivered, or the same
        request sent again, answered at ``reply_to``) joins its ticket, whose end
        acknowledges every message that asked for it and replies to every destination.
        Returns the ticket, and the answer to send to ``reply_to`` now when the end's
        replies have already gone out.  Atomic with :meth:`release` and
        :meth:`destinations`: a delivery joins a ticket still here, or finds none (and
        the journal answers for it).

        A request for other work under the same id (``msg_type`` and input ``digest``,
        :meth:`Ticket.other_than`) does not join: the ticket is returned untouched, for
        the caller to refuse the delivery."""
        with self._lock:
            ticket = self._tickets.get(job_id)
            if ticket is None:
                return None, None
            if ticket.other_than(msg_type, digest):
                return ticket, None
            ticket.joined.append(ticket.delivery)
            ticket.delivery = delivery
            if not reply_to or reply_to in ticket.reply_destinations:
                return ticket, None
            if ticket.replied:
                return ticket, ticket.answer
            ticket.also_reply_to.append(reply_to)
            return ticket, None

    def destinations(self, ticket: Ticket) -> list[str]:
        """Where the end of ``ticket`` replies; later copies are answered as they join."""
        with self._lock:
            ticket.replied = True
            return ticket.reply_destinations

    def get(self, job_id: str) -> Ticket | None:
        with self._lock:
            return self._tickets.get(job_id)

    def started(self, ticket: Ticket) -> None:
        with self._lock:
            ticket.started_at = time.monotonic()
            self._running += 1

    def claim(self, ticket: Ticket) -> bool:
        """True for the first caller only: that caller ends the job."""
        with self._lock:
            if ticket.ended:
                return False
            ticket.ended = True
            return True

    def free_key(self, ticket: Ticket) -> None:
        """Let another job with ``ticket``'s dedup key in: its work is over (the ticket
        stays until its end is written)."""
        with self._lock:
            if ticket.dedup_key is not None and self._keys.get(ticket.dedup_key) == ticket.job_id:
                del self._keys[ticket.dedup_key]

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            if self._tickets.pop(ticket.job_id, None) is None:
                return
            if ticket.dedup_key is not None and self._keys.get(ticket.dedup_key) == ticket.job_id:
                del self._keys[ticket.dedup_key]
            if ticket.started_at is not None:
                self._running -= 1
            if not self._tickets:
                self.idle.set()

    def snapshot(self) -> list[Ticket]:
        with self._lock:
            return list(self._tickets.values())

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._tickets)

    @property
    def running(self) -> int:
        with self._lock:
            return self._running
