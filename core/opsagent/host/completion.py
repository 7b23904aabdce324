"""The end of a job: record the outcome, publish it, then acknowledge the message.

The order is the at-least-once guarantee: the message is acknowledged only after the
outcome is in the journal and has been published.  If the host dies in between, the
broker redelivers and the journal answers (see :mod:`opsagent.host.dispatch`).

The host ends jobs in batches on a completion thread of its own (:meth:`Completion.start`):
a worker hands its outcome over and takes its next job; the thread publishes every event
waiting in one write to the broker, records the outcomes (and the acceptances still held)
in one journal commit, then acknowledges the messages in one write.  Under load a batch
holds whatever ended while the previous one was written; idle, a batch is one job.
Without the thread (``opsagent do``, tests) each end is written at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from opsagent.host import events
from opsagent.host.journal import Journal
from opsagent.host.ledger import Ledger, Ticket
from opsagent.outcome import Outcome
from opsagent.transport.base import Delivery, Transport, TransportError

#: The most ends written in one batch.
BATCH_MAX = 512
#: Seconds between tries to record ends the journal refused (a full disk).
RETRY_S = 1.0


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
        max_event: int = 1 << 20,
    ) -> None:
        self.transport = transport
        self.max_event = max_event
        self.journal = journal
        self.ledger = ledger
        self.topic = topic
        self.sender = sender
        self.namespace = namespace
        self.outcomes: dict[str, int] = {}
        self._cv = threading.Condition()
        self._waiting: list[tuple[Ticket, Outcome, tuple[bytes, ...]]] = []
        #: Ends published (or not: the flag) whose record failed: retried every
        #: RETRY_S until the journal takes them, their messages unacknowledged meanwhile.
        self._unrecorded: list[tuple[Ticket, Outcome, bool]] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: ``(job_id, outcome) -> bool``: an end the host keeps quiet besides those its
        #: capability does (a schedule's ``quiet_unless``).
        self.quiet_rule: Callable[[str, Outcome], bool] | None = None

    # -- the completion thread -----------------------------------------------------

    def start(self) -> None:
        """Write ends in batches on a thread of this object's own."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="completion", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is waiting, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        with self._cv:
            self._stopping = True
            self._cv.notify()
        thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        retry_at = 0.0
        while True:
            with self._cv:
                while not self._waiting and not self._stopping:
                    if not self._unrecorded:
                        self._cv.wait()
                    elif time.monotonic() < retry_at:
                        self._cv.wait(retry_at - time.monotonic())
                    else:
                        break
                batch = self._waiting[:BATCH_MAX]
                del self._waiting[:BATCH_MAX]
                stopping = self._stopping and not batch
            if self._unrecorded and (stopping or time.monotonic() >= retry_at):
                if not self._record_again(final=stopping):
                    retry_at = time.monotonic() + RETRY_S
            if stopping:
                return
            try:
                self._write(batch)
            except Exception:  # noqa: BLE001 - the completion thread must survive anything
                logger.exception("writing {} job end(s) failed; left for redelivery", len(batch))

    def _record_again(self, *, final: bool) -> bool:
        """Try again to record the ends the journal refused; acknowledge those that
        were published once recorded.  True when none is left.  ``final`` (stopping):
        what still cannot be recorded is left unacknowledged, and its job runs again
        when the broker redelivers it."""
        ends = self._unrecorded
        try:
            self.journal.finish_many([(t.job_id, o, published) for t, o, published in ends])
        except Exception:  # noqa: BLE001 - the journal logged why; try again later
            if final:
                logger.warning(
                    "{} job end(s) could not be recorded before stopping; their messages "
                    "are left for redelivery",
                    len(ends),
                )
                self._unrecorded = []
                for ticket, _o, _p in ends:
                    self.ledger.release(ticket)
            return False
        self._unrecorded = []
        logger.info("{} job end(s) recorded after the journal refused them", len(ends))
        self._acknowledge([(t, o, ()) for t, o, published in ends if published])
        for ticket, _o, published in ends:
            if not published:
                self.ledger.release(ticket)
        return True

    # -- publishing ----------------------------------------------------------------

    def _encode(self, body: dict[str, Any], outcome: Outcome | None) -> bytes:
        return events.encode(body) if outcome is None else self.encode_event(body, outcome)

    def send(
        self,
        body: dict[str, Any] | list[dict[str, Any]],
        reply_to: str | None,
        outcome: Outcome | None = None,
    ) -> None:
        """Publish ``body`` (or each of a batch job's bodies) on the event topic and, when
        given, to ``reply_to``; a job's event (``outcome`` given) within the size cap
        (:meth:`encode_event`)."""
        for one in body if isinstance(body, list) else [body]:
            raw = self._encode(one, outcome)
            self.transport.send(self.topic, raw)
            if reply_to:
                self.transport.send(reply_to, raw)

    def reply_raw(self, raw: tuple[bytes, ...], reply_to: str) -> None:
        for frame in raw:
            self.transport.send(reply_to, frame)

    def reply(
        self,
        body: dict[str, Any] | list[dict[str, Any]],
        reply_to: str | None,
        outcome: Outcome | None = None,
    ) -> None:
        if reply_to:
            for one in body if isinstance(body, list) else [body]:
                self.transport.send(reply_to, self._encode(one, outcome))

    def events_of(self, ticket: Ticket, outcome: Outcome) -> list[dict[str, Any]]:
        return events.job_events(
            ticket.cap,
            outcome,
            ticket.echo,
            ticket.inp,
            job_id=ticket.job_id,
            sender=self.sender,
            namespace=self.namespace,
        )

    def encode_event(self, body: dict[str, Any], outcome: Outcome) -> bytes:
        """``body`` as sent; over ``max_event`` bytes, without the outcome's data fields
        (a broker drops the connection that sends a frame over its cap, and with it the
        frames written after), saying so in ``data_dropped``."""
        raw = events.encode(body)
        if len(raw) <= self.max_event:
            return raw
        slim = {k: v for k, v in body.items() if k not in outcome.data}
        slim["data_dropped"] = (
            f"the job's data made this event {len(raw)} bytes, over the host's cap of "
            f"{self.max_event} ([host] max_event_bytes); the journal keeps it"
        )
        logger.bind(job_id=body.get("job_id")).warning(
            "event of {} is {} bytes, over the cap of {}: sent without its data",
            body.get("job_id"),
            len(raw),
            self.max_event,
        )
        return events.encode(slim)

    def finish(self, ticket: Ticket, outcome: Outcome) -> None:
        """End ``ticket`` with ``outcome`` (exactly once; later calls are ignored).

        Published first, then recorded together with the fact that it was published
        (one journal write), then acknowledged.  Dying between the publication and the
        record means the job runs again on redelivery: at least once, never lost.  With
        the completion thread running this hands the end over and returns; the ticket
        leaves the ledger once it is written.
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
            ticket.quiet = self._quiet(ticket, outcome)
            # One frame per event: a batch job has one per item (Capability.items).
            raw = tuple(
                self.encode_event(body, outcome) for body in self.events_of(ticket, outcome)
            )
            ticket.answer = raw
        except BaseException:
            self.ledger.release(ticket)
            raise
        if self._thread is not None:
            with self._cv:
                self._waiting.append((ticket, outcome, raw))
                if len(self._waiting) == 1:
                    self._cv.notify()
            return
        self._write([(ticket, outcome, raw)])

    def _quiet(self, ticket: Ticket, outcome: Outcome) -> bool:
        """``Capability.quiet`` or :attr:`quiet_rule` says so, and nobody waits on a
        reply."""
        if ticket.reply_destinations:
            return False
        quiet = ticket.cap.quiet
        try:
            if quiet is not None and quiet(ticket.inp, outcome):
                return True
            return self.quiet_rule is not None and self.quiet_rule(ticket.job_id, outcome)
        except Exception:  # noqa: BLE001 - a broken rule publishes, as if there were none
            logger.opt(exception=True).bind(job_id=ticket.job_id).warning(
                "quiet() of {} raised; the end is published", ticket.cap.msg_type
            )
            return False

    def _write(self, batch: list[tuple[Ticket, Outcome, tuple[bytes, ...]]]) -> None:
        """Publish, record, acknowledge ``batch``; its tickets leave the ledger after,
        unless the journal refuses the record: then they wait, unacknowledged, for
        :meth:`_record_again` (only on the completion thread)."""
        if not batch:
            return
        held = False
        try:
            messages: list[tuple[str, bytes]] = []
            for ticket, _outcome, raw in batch:
                # Before the event goes out: a caller that sends the same work again once
                # it has the event must not find the key still held.
                self.ledger.free_key(ticket)
                destinations = self.ledger.destinations(ticket)
                for frame in raw:
                    if not ticket.quiet:
                        messages.append((self.topic, frame))
                    messages.extend((dest, frame) for dest in destinations)
            try:
                if messages:
                    self.transport.send_many(messages)
                published = True
            except TransportError as exc:
                # Left unacknowledged: the broker redelivers after the reconnect and the
                # journal's recorded outcome is published then.
                logger.warning(
                    "outcome of {} job(s) ({}...) not published yet: {}",
                    len(batch),
                    batch[0][0].job_id,
                    exc,
                )
                published = False
            try:
                self.journal.finish_many([(t.job_id, o, published) for t, o, _raw in batch])
            except sqlite3.Error:
                if self._thread is None:
                    raise
                # Not acknowledged without a record: kept, and tried again.
                self._unrecorded.extend((t, o, published) for t, o, _raw in batch)
                held = True
                return
            if published:
                held = True  # released by _acknowledge
                self._acknowledge(batch)
        finally:
            if not held:
                for ticket, _o, _raw in batch:
                    self.ledger.release(ticket)

    def _acknowledge(self, batch: list[tuple[Ticket, Outcome, tuple[bytes, ...]]]) -> None:
        """Take recorded ends' tickets out of the ledger, then acknowledge every message
        that asked for them: a copy arriving before the release has joined its ticket
        (:meth:`Ledger.rejoin`) and is acknowledged here; one arriving after is answered
        from the journal."""
        tickets = [t for t, _o, _raw in batch]
        for ticket in tickets:
            self.ledger.release(ticket)
        tickets = [t for t in tickets if not t.internal]
        if not tickets:
            return
        acked = self.transport.ack_many([d for t in tickets for d in t.deliveries])
        at = 0
        for ticket in tickets:
            # The latest delivery decides: earlier ones of an earlier connection were
            # redelivered already, and that redelivery is the latest.
            if not acked[at]:
                self._earlier(ticket.job_id)
            at += len(ticket.joined) + 1

    @staticmethod
    def _earlier(job_id: str) -> None:
        logger.bind(job_id=job_id).info(
            "message of {} belongs to an earlier connection; its redelivery will be acked",
            job_id,
        )

    def publish_and_ack(
        self,
        job_id: str,
        body: dict[str, Any] | list[dict[str, Any]],
        reply_to: str | None,
        delivery: Delivery,
        outcome: Outcome | None = None,
    ) -> None:
        try:
            self.send(body, reply_to, outcome)
        except TransportError as exc:
            # Left unacknowledged: the broker redelivers after the reconnect and the
            # journal's recorded outcome is published then.
            logger.bind(job_id=job_id).warning("outcome of {} not published yet: {}", job_id, exc)
            return
        try:
            self.journal.mark_published(job_id)
        except sqlite3.Error:
            pass  # the journal logged it; a redelivery publishes the outcome again
        if not self.transport.ack(delivery):
            self._earlier(job_id)
