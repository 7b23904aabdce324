"""The ledger: a copy of a message joins the job in flight, or finds none once it ended."""

from __future__ import annotations

import attrs
from opsagent.capability import Capability
from opsagent.host.ledger import Ledger, Ticket
from opsagent.outcome import Outcome
from opsagent.transport.base import Delivery


@attrs.frozen
class Empty:
    pass


CAP = Capability(msg_type="t_noop", input=Empty, doer=lambda inp, job: Outcome.ok(),
                 isolation="thread", events={"ok": "t_done", "error": "t_failed"})


def delivery(n: int) -> Delivery:
    return Delivery(body=b"{}", message_id=f"m{n}", redelivered=False, headers={},
                    token=(f"ack{n}", "s", 1))


def test_a_copy_joins_the_ticket_in_flight_and_every_message_is_kept_for_the_ack() -> None:
    ledger = Ledger()
    ticket = Ticket(job_id="j", cap=CAP, inp=Empty(), body={}, echo={}, dedup_key=None,
                    reply_to=None, delivery=delivery(1))
    assert ledger.admit(ticket) is None
    assert ledger.rejoin("j", delivery(2), "/queue/r2") == (ticket, None)
    assert ledger.rejoin("j", delivery(3), "/queue/r2") == (ticket, None)
    assert [d.message_id for d in ticket.deliveries] == ["m3", "m1", "m2"]
    assert ticket.reply_destinations == ["/queue/r2"], "each destination once"
    assert ledger.rejoin("other", delivery(4)) == (None, None)
    # The end's replies go out; a copy joining after that is answered by its joiner.
    ticket.answer = b'{"outcome": "ok"}'
    assert ledger.destinations(ticket) == ["/queue/r2"]
    assert ledger.rejoin("j", delivery(5), "/queue/r3") == (ticket, b'{"outcome": "ok"}')
    assert ledger.rejoin("j", delivery(6), "/queue/r2") == (ticket, None), "answered already"
    assert ticket.reply_destinations == ["/queue/r2"]
    ledger.release(ticket)
    assert ledger.rejoin("j", delivery(7)) == (None, None), "after its end the journal answers"
    assert [d.message_id for d in ticket.deliveries] == ["m6", "m1", "m2", "m3", "m5"]


def test_other_work_under_the_id_of_a_job_in_flight_does_not_join_it() -> None:
    ledger = Ledger()
    ticket = Ticket(job_id="j", cap=CAP, inp=Empty(), body={}, echo={}, dedup_key=None,
                    reply_to="/queue/r1", delivery=delivery(1), digest="d1")
    assert ledger.admit(ticket) is None
    for msg_type, digest in (("t_other", "d1"), ("t_noop", "d2")):
        got = ledger.rejoin("j", delivery(2), "/queue/r2", msg_type=msg_type, digest=digest)
        assert got == (ticket, None) and ticket.other_than(msg_type, digest)
    assert [d.message_id for d in ticket.deliveries] == ["m1"], "nothing joined"
    assert ticket.reply_destinations == ["/queue/r1"], "no reply to the other caller"
    # The same request (the same msg_type and input) from a new reply_to does join.
    assert ledger.rejoin("j", delivery(3), "/queue/r3", msg_type="t_noop", digest="d1") == (
        ticket, None)
    assert not ticket.other_than("t_noop", "d1")
    assert [d.message_id for d in ticket.deliveries] == ["m3", "m1"]
    assert ticket.reply_destinations == ["/queue/r1", "/queue/r3"]
