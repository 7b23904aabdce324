"""panda_task_operations' doer with the real panda-client against the fake PanDA server:
the pacing, one outcome per item, the monitor calls, a batch cut short."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from opsagent import Job, testing
from opsagent.testing import FakeMonitor, FakePanda, journal_notes
from panda_ops_support import BATCH, make_job, table

BATCH_ID = "b-20261203-1"


def body(n: int = 3, operation: str = "pause", **over: Any) -> dict[str, Any]:
    items = [
        {"operation_id": f"op-{i}", "jedi_task_id": 41000 + i, "task_name": f"t.{41000 + i}"}
        for i in range(n)
    ]
    return {"batch_id": BATCH_ID, "operation": operation, "items": items, **over}


def test_the_time_limit_grows_with_the_batch_as_legacy_says() -> None:
    for n in (1, 2, 10, 101):
        inp = testing.structure(body(n), BATCH.input)
        assert BATCH.time_limit_for(inp) == 120 + math.ceil(1.0 * (n - 1)) + 30


def test_a_batch_is_paced_one_command_a_second_and_each_item_verified(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    inp = testing.structure(body(3), BATCH.input)
    job = make_job(BATCH, tmp_path, operator_token.path, table(monitor, panda))
    out = testing.call_doer(BATCH, inp, job)
    assert out.status == "ok", out
    assert [i.data["status"] for i in out.items] == ["verified"] * 3
    assert all(i.data["observed_status"] == "paused" for i in out.items)
    assert out.data["counts"] == {"verified": 3, "unverified": 0, "failed": 0, "timeout": 0}
    # The default pacing (1 s), measured where PanDA sees it.
    sent = panda.requests_to("task/pause")
    assert [r.json()["task_id"] for r in sent] == [41000, 41001, 41002]
    gaps = [b.received - a.received for a, b in zip(sent, sent[1:], strict=False)]
    assert all(g >= 1.0 for g in gaps), gaps
    # The monitor: every item running, the bulk notice, each final state, the summary.
    seq = [
        (c.kind, c.operation_id or c.body["dedup_key"], c.body.get("status")) for c in monitor.calls
    ]
    assert seq == [
        ("state", "op-0", "running"),
        ("state", "op-1", "running"),
        ("state", "op-2", "running"),
        ("notice", f"panda-task-bulk:{BATCH_ID}:requested", None),
        ("state", "op-0", "verified"),
        ("state", "op-1", "verified"),
        ("state", "op-2", "verified"),
        ("notice", f"panda-task-bulk:{BATCH_ID}:completed", None),
    ]
    assert monitor.notices[-1]["detail"] == "3 verified, 0 unverified, 0 failed, 0 timeout"
    assert monitor.calls[4].body["evidence"]["batch_id"] == BATCH_ID


def test_each_item_ends_on_its_own(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    panda.task(41001)["status"] = "finished"  # pause is irrelevant: refused with code 4
    inp = testing.structure(body(3), BATCH.input)
    job = make_job(BATCH, tmp_path, operator_token.path, table(monitor, panda))
    out = testing.call_doer(BATCH, inp, job)
    assert [i.data["status"] for i in out.items] == ["verified", "failed", "verified"]
    assert out.items[1].data["accepted"] is False and "irrelevant" in out.items[1].reason
    assert out.status == "error" and "1 failed" in out.reason
    assert monitor.states("op-1") == ["running", "failed"]
    assert monitor.notices[-1]["severity"] == "warning"


def test_at_the_deadline_the_items_not_reached_end_timeout(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    # Budget 3.5 s (time limit 8.5 less the 5 s backstop): with the read-backs after
    # all commands, the 5th command (at 4 s) is never sent.
    for i in range(3, 6):
        panda.add_task(41000 + i, f"t.{41000 + i}")
    inp = testing.structure(body(6), BATCH.input)
    job = make_job(BATCH, tmp_path, operator_token.path, table(monitor, panda), time_limit=8.5)
    out = testing.call_doer(BATCH, inp, job)
    statuses = [i.data["status"] for i in out.items]
    sent = len(panda.requests_to("task/pause"))
    assert 1 <= sent < 6, sent
    # Sent but not read back before the deadline: unverified; never sent: timeout.
    assert statuses[:sent] == ["unverified"] * sent, statuses
    assert statuses[sent:] == ["timeout"] * (6 - sent)
    assert out.items[-1].reason == "operation timed out after 3.5s"
    assert len(out.items) == 6
    assert [monitor.states(f"op-{i}")[-1] for i in range(6)] == statuses


def _interrupted(job: Job) -> Job:
    import attrs

    return attrs.evolve(job, interrupted=True, attempt=2)


def test_a_batch_cut_short_is_reconciled_from_its_notes_and_nothing_is_sent_twice(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    notes = journal_notes(tmp_path / "journal.db")
    inp = testing.structure(body(3), BATCH.input)
    job = make_job(BATCH, tmp_path, operator_token.path, table(monitor, panda), notes=notes)
    # The first attempt: PanDA answered the first command, then the job was killed
    # (what its notes hold is what send() noted).
    from opsagent_panda_ops import client, operations

    answered = operations._Seen(client.Sent(True, "command=pause is registered"), sending=True)
    job.remember("panda-op:op-0", answered.to_json())
    # The second command went out; the job died before PanDA's answer came back.
    job.remember("panda-op:op-1", operations._Seen(sending=True).to_json())
    panda.task(41000)["status"] = "paused"  # what the first attempt's commands did
    panda.task(41001)["status"] = "paused"
    out = testing.call_doer(BATCH, inp, _interrupted(job))
    assert [i.data["status"] for i in out.items] == ["verified", "verified", "timeout"]
    assert "cut short before this task's command was sent" in out.items[2].reason
    assert panda.requests_to("task/pause") == []  # nothing sent again...
    read = [r.arg("task_id") for r in panda.requests_to("task/get_status", "GET")]
    assert sorted(set(read)) == ["41000", "41001"]  # ...PanDA asked instead
    assert monitor.states("op-0") == ["verified"] and monitor.states("op-2") == ["timeout"]


def test_a_command_whose_answer_was_lost_and_had_no_effect_is_unverified(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    from opsagent_panda_ops import operations

    notes = journal_notes(tmp_path / "journal.db")
    inp = testing.structure(body(1), BATCH.input)
    job = make_job(BATCH, tmp_path, operator_token.path, table(monitor, panda), notes=notes)
    job.remember("panda-op:op-0", operations._Seen(sending=True).to_json())
    out = testing.call_doer(BATCH, inp, _interrupted(job))
    (item,) = out.items
    assert item.data["status"] == "unverified" and item.data["observed_status"] == "running"
    assert "check the task before sending it again" in item.reason
    assert panda.requests_to("task/pause") == []


def test_a_batch_interrupted_before_any_answer_runs(
    tmp_path: Path, operator_token: Any, monitor: FakeMonitor, panda: FakePanda
) -> None:
    notes = journal_notes(tmp_path / "journal.db")
    inp = testing.structure(body(2), BATCH.input)
    job = make_job(BATCH, tmp_path, operator_token.path, table(monitor, panda), notes=notes)
    out = testing.call_doer(BATCH, inp, _interrupted(job))
    assert [i.data["status"] for i in out.items] == ["verified", "verified"]
    assert len(panda.requests_to("task/pause")) == 2
