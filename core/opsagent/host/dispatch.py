"""The receiver: parse, validate, check dedup, enqueue, return.

:meth:`Dispatcher.on_delivery` runs on the transport's receiver thread.  It never
blocks on work and nothing raised in it escapes.  A request from a broker user the
capability does not allow (:mod:`opsagent.host.access`) is refused before its input is even
read.  Control capabilities are answered on the spot.  Every refused request gets one
structured ``request_rejected`` (to ``reply_to`` and on the topic) and is acknowledged,
so a poison message never loops.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from loguru import logger

from opsagent.capability import Capability
from opsagent.host import events
from opsagent.host.access import Access
from opsagent.host.completion import Completion
from opsagent.host.control import Control
from opsagent.host.envelope import Envelope, EnvelopeError, parse
from opsagent.host.journal import Journal, digest
from opsagent.host.ledger import Ledger, Ticket
from opsagent.host.plugins import Registry
from opsagent.isolation import execute
from opsagent.isolation.workers import Workers
from opsagent.schema import InputError, structure
from opsagent.transport.base import Delivery, Transport, TransportError


class Dispatcher:
    def __init__(
        self,
        *,
        registry: Registry,
        transport: Transport,
        journal: Journal,
        ledger: Ledger,
        workers: Workers,
        completion: Completion,
        namespace: str,
        require_namespace: bool,
        max_body: int,
        control: Control,
        unavailable: dict[str, str],
        access: Access | None = None,
        on_control: Callable[..., None] | None = None,
    ) -> None:
        self.registry = registry
        self.transport = transport
        self.journal = journal
        self.ledger = ledger
        self.workers = workers
        self.completion = completion
        self.namespace = namespace
        self.require_namespace = require_namespace
        self.max_body = max_body
        self.control = control
        self.access = access or Access()
        #: Told of each answered control request: (capability, input, outcome, job id,
        #: broker user).
        self.on_control = on_control
        # Shared with the host, which updates it as credentials expire and are renewed.
        self.unavailable = unavailable
        self.accepting = True
        self.counts: Counter[str] = Counter()
        self.on_received: Callable[[], None] | None = None
        self._lock = threading.Lock()

    # -- entry point -------------------------------------------------------------------

    def on_delivery(self, delivery: Delivery) -> None:
        """Handle one message; never raises."""
        try:
            self._handle(delivery)
        except Exception as exc:  # noqa: BLE001 - the receiver loop must survive anything
            logger.opt(exception=True).error(
                "internal error handling message {}", delivery.message_id
            )
            self.counts["internal"] += 1
            self._reject(
                delivery, None, None, f"internal error: {type(exc).__name__}", [], "internal"
            )

    # -- steps -------------------------------------------------------------------------

    def _handle(self, delivery: Delivery) -> None:
        self.counts["received"] += 1
        if self.on_received is not None:
            self.on_received()
        try:
            env = parse(delivery.body, max_body=self.max_body)
        except EnvelopeError as exc:
            self._reject(delivery, exc.msg_type, exc.reply_to, exc.reason, exc.errors, "malformed")
            return
        if not self._ours(env, delivery):
            return
        cap = self.registry.get(env.msg_type)
        if cap is None:
            self._reject_unknown(delivery, env)
            return
        refusal = self.access.refusal(cap.msg_type, delivery.user)
        if refusal is not None:
            self._forbid(delivery, env, refusal)
            return
        if cap.control:
            self._control(delivery, env, cap)
            return
        reason = self.unavailable.get(cap.msg_type)
        if reason is None and cap.isolation == "thread":
            lane = self.workers.lanes.get(cap.msg_type)
            reason = None if lane is None else lane.stuck()
        if reason is not None:
            self._reject(
                delivery,
                env.msg_type,
                env.reply_to,
                f"{env.msg_type} is unavailable: {reason}",
                [],
                "unavailable",
                env.request_id,
            )
            return
        if not self.accepting:
            self._reject(
                delivery,
                env.msg_type,
                env.reply_to,
                "the host is stopping and takes no new work; send again later",
                [],
                "stopping",
                env.request_id,
            )
            return
        inp = self._input(delivery, env, cap)
        if inp is not None:
            self._accept(delivery, env, cap, inp)

    def _ours(self, env: Envelope, delivery: Delivery) -> bool:
        if env.namespace is None and not self.require_namespace:
            return True
        if env.namespace == self.namespace:
            return True
        self.counts["ignored"] += 1
        logger.info(
            "ignored {} for namespace {!r} (this host serves {!r})",
            env.msg_type,
            env.namespace,
            self.namespace,
        )
        self.transport.ack(delivery)
        return False

    def _forbid(self, delivery: Delivery, env: Envelope, reason: str) -> None:
        """Refuse a request its sender may not make: journaled (who asked for what, not
        the body) under the broker's message id -- never under the caller's request_id,
        which would let an outsider overwrite the record of someone else's job --, the
        rejection published, the message acknowledged.  The ``/`` keeps the record out of
        reach of any request_id (which cannot hold one)."""
        record_id = f"forbidden/{delivery.message_id}"
        asked = {"msg_type": env.msg_type, "request_id": env.request_id, "user": delivery.user}
        try:
            self.journal.accept(record_id, env.msg_type, None, asked)
        except sqlite3.Error:
            pass  # the journal logged it; a redelivery is refused again
        self._refuse_recorded(record_id, delivery, env, reason, "forbidden", user=delivery.user)

    def _reject_unknown(self, delivery: Delivery, env: Envelope) -> None:
        broken = self.registry.broken_msg_type(env.msg_type)
        if broken is not None:
            self._reject(
                delivery,
                env.msg_type,
                env.reply_to,
                f"{env.msg_type} is unavailable: plugin {broken.name} "
                f"({broken.distribution} {broken.version}) is broken: {broken.error}",
                [],
                "unavailable",
                env.request_id,
            )
            return
        known = ", ".join(sorted(self.registry.msg_types))
        self._reject(
            delivery,
            env.msg_type,
            env.reply_to,
            f"unknown msg_type {env.msg_type!r}; this host knows: {known}",
            [],
            "unknown_msg_type",
            env.request_id,
        )

    def _input(self, delivery: Delivery, env: Envelope, cap: Capability) -> Any | None:
        """The capability's input, or ``None`` once the request has been rejected."""
        try:
            return structure(env.body, cap.input)
        except InputError as exc:
            self._reject(
                delivery,
                env.msg_type,
                env.reply_to,
                f"invalid input for {env.msg_type}: {exc}",
                exc.errors,
                "invalid",
                env.request_id,
            )
            return None

    def _control(self, delivery: Delivery, env: Envelope, cap: Capability) -> None:
        inp = self._input(delivery, env, cap)
        if inp is None:
            return
        job = self.workers.jobs.control_job(cap.msg_type, delivery.message_id, self.control)
        outcome = execute.call(cap, inp, job)
        body = {
            "msg_type": cap.event_for(outcome.status),
            **outcome.data,
            "sender": self.completion.sender,
            "namespace": self.namespace,
        }
        if env.request_id is not None:
            body["request_id"] = env.request_id
        self.counts[cap.msg_type] += 1
        try:
            self.completion.reply(body, env.reply_to)
        except TransportError as exc:
            logger.warning("could not reply to {}: {}", env.msg_type, exc)
        self.transport.ack(delivery)
        if self.on_control is not None:
            try:
                self.on_control(cap, inp, outcome, delivery.message_id, delivery.user)
            except Exception:  # noqa: BLE001 - a report never fails a control request
                logger.opt(exception=True).warning("reporting {} failed", cap.msg_type)

    def _accept(self, delivery: Delivery, env: Envelope, cap: Capability, inp: Any) -> None:
        job_id = env.request_id or delivery.message_id
        input_digest = digest(inp)
        holder, answer = self.ledger.rejoin(
            job_id, delivery, env.reply_to, msg_type=cap.msg_type, digest=input_digest
        )
        if holder is not None and self._refused_as_reuse(
            delivery, env, cap, input_digest, holder.cap.msg_type, holder.digest
        ):
            return
        if holder is not None:
            # The same message again (redelivered after a reconnect), or the same request
            # sent again, while its job is still here: the job's end acknowledges both
            # and answers each reply_to -- this one now if the end's replies are out.
            self.counts["rejoined"] += 1
            if answer is not None and env.reply_to:
                try:
                    self.completion.reply_raw(answer, env.reply_to)
                except TransportError as exc:
                    logger.warning("could not answer {} again: {}", job_id, exc)
            return
        key = cap.key_of(inp)
        entry = self.journal.accept(job_id, cap.msg_type, key, env.body, input_digest)
        if self._refused_as_reuse(
            delivery, env, cap, input_digest, entry.msg_type, entry.digest, entry.body
        ):
            return
        if entry.state == "finished":
            self._answer_finished(delivery, env, cap, inp, entry)
            return
        ticket = Ticket(
            job_id=job_id,
            cap=cap,
            inp=inp,
            body=env.body,
            echo=cap.echo_of(inp),
            dedup_key=key,
            reply_to=env.reply_to,
            delivery=delivery,
            digest=input_digest,
            attempt=entry.attempts,
            # Started here before, or delivered before to a consumer that left no record
            # here (another host, a standby's peer): it may have run part way.
            interrupted=entry.state == "running"
            or ((delivery.redelivered or delivery.maybe_redelivered) and entry.attempts == 1),
        )
        other = self.ledger.admit(ticket)
        if other is not None:
            self._finish_rejected(
                job_id,
                delivery,
                env,
                cap,
                inp,
                f"duplicate: {cap.msg_type} job {other.job_id} with the same "
                f"key ({key}) is in flight; this request was not run",
                "duplicate",
            )
            return
        if not self.workers.submit(ticket):
            self.ledger.release(ticket)
            self._finish_rejected(
                job_id,
                delivery,
                env,
                cap,
                inp,
                f"busy: {cap.queue_limit} {cap.msg_type} jobs are already "
                f"waiting; send again later",
                "busy",
            )
            return
        self.counts["accepted"] += 1

    def _refused_as_reuse(
        self,
        delivery: Delivery,
        env: Envelope,
        cap: Capability,
        input_digest: str,
        held_msg_type: str,
        held_digest: str | None,
        held_body: dict[str, Any] | None = None,
    ) -> bool:
        """Refuse a request whose id is already another job's (``held_*``: that job's
        msg_type, input digest and, from a journal older than digests, its body); True
        when refused.  Nothing is recorded under the id: it stays the other job's."""
        if held_digest is None and held_body is not None and held_msg_type == cap.msg_type:
            try:
                held_digest = digest(structure(held_body, cap.input))
            except InputError:
                pass  # judged by msg_type alone, as before digests were kept
        same_input = None in (held_digest, input_digest) or held_digest == input_digest
        if held_msg_type == cap.msg_type and same_input:
            return False
        job_id = env.request_id or delivery.message_id
        what = "another input" if held_msg_type == cap.msg_type else "another msg_type"
        self._reject(
            delivery,
            env.msg_type,
            env.reply_to,
            f"request_id {job_id!r} is already the id of a {held_msg_type} job with "
            f"{what}; this {env.msg_type} request (message {delivery.message_id}) was not "
            "run: send it with a request_id of its own",
            [],
            "request_id_reused",
            env.request_id,
        )
        return True

    def _finish_rejected(
        self,
        job_id: str,
        delivery: Delivery,
        env: Envelope,
        cap: Capability,
        inp: Any,
        reason: str,
        code: str,
    ) -> None:
        self._refuse_recorded(job_id, delivery, env, reason, code, echo=cap.echo_of(inp))

    def _refuse_recorded(
        self,
        job_id: str,
        delivery: Delivery,
        env: Envelope,
        reason: str,
        code: str,
        echo: dict[str, Any] | None = None,
        **data: Any,
    ) -> None:
        """End a refused request in the journal (finished, so a redelivery of this message
        is not run either), publish the rejection, acknowledge once it is out."""
        from opsagent.outcome import Outcome

        try:
            self.journal.finish(job_id, Outcome.error(reason, rejected=code, **data))
        except sqlite3.Error:
            pass  # the journal logged it; a redelivery would be judged again
        body = events.rejection(
            env.msg_type,
            reason,
            [],
            sender=self.completion.sender,
            namespace=self.namespace,
            request_id=env.request_id,
            code=code,
            echo=echo,
        )
        self.counts[code] += 1
        logger.bind(msg_type=env.msg_type, job_id=job_id).warning("rejected: {}", reason)
        self.completion.publish_and_ack(job_id, body, env.reply_to, delivery)

    def _answer_finished(
        self, delivery: Delivery, env: Envelope, cap: Capability, inp: Any, entry: Any
    ) -> None:
        self.counts["redelivered_finished"] += 1
        resent = env.reply_to is not None and not delivery.redelivered
        if entry.published and not resent:
            self.transport.ack(delivery)
            return
        outcome = entry.outcome
        body = events.recorded(
            cap,
            outcome,
            cap.echo_of(inp),
            job_id=entry.id,
            request_id=env.request_id,
            sender=self.completion.sender,
            namespace=self.namespace,
            request=env.msg_type,
            inp=inp,
        )
        # A job's event is held to the size cap; a rejection is small.
        job = None if "rejected" in outcome.data else outcome
        if entry.published:
            # The same request sent again after its end (a caller's retry that lost the
            # answer): the recorded outcome to its reply_to only; the topic had it.
            try:
                self.completion.reply(body, env.reply_to, job)
            except TransportError as exc:
                logger.warning("could not answer {} again: {}", entry.id, exc)
                return  # unacknowledged: redelivered after the reconnect, then acked
            self.transport.ack(delivery)
            return
        self.completion.publish_and_ack(entry.id, body, env.reply_to, delivery, job)

    def _reject(
        self,
        delivery: Delivery,
        msg_type: str | None,
        reply_to: str | None,
        reason: str,
        errors: list[str],
        code: str,
        request_id: str | None = None,
    ) -> None:
        self.counts[code] += 1
        logger.bind(msg_type=msg_type or "?").warning("rejected {}: {}", msg_type, reason)
        body = events.rejection(
            msg_type,
            reason,
            errors,
            sender=self.completion.sender,
            namespace=self.namespace,
            request_id=request_id,
            code=code,
        )
        try:
            self.completion.send(body, reply_to)
        except TransportError as exc:
            logger.warning("could not publish rejection: {}", exc)
            return  # unacknowledged: redelivered and rejected again once connected
        self.transport.ack(delivery)
