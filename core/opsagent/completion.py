"""The end of a job: record the outcome, publish it, then acknowledge the message.

The order is the at-least-once guarantee: the message is acknowledged only after the
outcome is in the journal and has been published.  If the host dies in between, the
broker redelivers and the journal answers (see :mod:`opsagent.dispatch`).
"""

from __future__ import annotations

import time
from typing import Any

from loguru import logger

from opsagent import events
from opsagent.journal import Journal
from opsagent.ledger import Ledger, Ticket
from opsagent.outcome import Outcome
from opsagent.transport.base import Delivery, Transport, TransportError


class Completion:
    def __init__(
        self,
        transport: Transport,
        journal: Journal,
        ledger: Ledger,
        *,
        topic: str,
        sender: str,
        namespace: str,
    ) -> None:
        self.transport = transport
        self.journal = journal
        self.ledger = ledger
        self.topic = topic
        self.sender = sender
        self.namespace = namespace
        self.outcomes: dict[str, int] = {}

    def send(self, body: dict[str, Any], reply_to: str | None) -> None:
        """Publish ``body`` on the event topic and, when given, to ``reply_to``."""
        raw = events.encode(body)
        self.transport.send(self.topic, raw)
        if reply_to:
            self.transport.send(reply_to, raw)

    def reply(self, body: dict[str, Any], reply_to: str | None) -> None:
        if reply_to:
            self.transport.send(reply_to, events.encode(body))

    def event_of(self, ticket: Ticket, outcome: Outcome) -> dict[str, Any]:
        return events.job_event(
            ticket.cap,
            outcome,
            ticket.echo,
            job_id=ticket.job_id,
            sender=self.sender,
            namespace=self.namespace,
        )

    def finish(self, ticket: Ticket, outcome: Outcome) -> None:
        """End ``ticket`` with ``outcome`` (exactly once; later calls are ignored).

        Published first, then recorded together with the fact that it was published
        (one journal write), then acknowledged.  Dying between the publication and the
        record means the job runs again on redelivery: at least once, never lost.
        """
        if not self.ledger.claim(ticket):
            return
        try:
            self.outcomes[outcome.status] = self.outcomes.get(outcome.status, 0) + 1
            duration = 0.0 if ticket.started_at is None else time.monotonic() - ticket.started_at
            log = logger.bind(
                job_id=ticket.job_id,
                msg_type=ticket.cap.msg_type,
                capability=ticket.cap.distribution,
                outcome=outcome.status,
                duration=round(duration, 3),
            )
            if outcome.status == "ok":
                log.info("job {} ended ok in {:.3f} s", ticket.job_id, duration)
            else:
                log.warning(
                    "job {} ended {} in {:.3f} s: {}",
                    ticket.job_id,
                    outcome.status,
                    duration,
                    outcome.reason,
                )
            try:
                self.send(self.event_of(ticket, outcome), ticket.reply_to)
                published = True
            except TransportError as exc:
                # Left unacknowledged: the broker redelivers after the reconnect and the
                # journal's recorded outcome is published then.
                log.warning("outcome of {} not published yet: {}", ticket.job_id, exc)
                published = False
            self.journal.finish(ticket.job_id, outcome, published=published)
            if published:
                self._ack(ticket.job_id, ticket.delivery)
        finally:
            self.ledger.release(ticket)

    def _ack(self, job_id: str, delivery: Delivery) -> None:
        if not self.transport.ack(delivery):
            logger.bind(job_id=job_id).info(
                "message of {} belongs to an earlier connection; its redelivery will be acked",
                job_id,
            )

    def publish_and_ack(
        self, job_id: str, body: dict[str, Any], reply_to: str | None, delivery: Delivery
    ) -> None:
        try:
            self.send(body, reply_to)
        except TransportError as exc:
            # Left unacknowledged: the broker redelivers after the reconnect and the
            # journal's recorded outcome is published then.
            logger.bind(job_id=job_id).warning("outcome of {} not published yet: {}", job_id, exc)
            return
        self.journal.mark_published(job_id)
        if not self.transport.ack(delivery):
            logger.bind(job_id=job_id).info(
                "message of {} belongs to an earlier connection; its redelivery will be acked",
                job_id,
            )
