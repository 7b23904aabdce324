"""A batch capability (``Capability.items``) ends with one event per item; its time limit
grows with its input (``Capability.extra_time``); every item gets exactly one terminal
event, the job's own outcome for the items its doer did not reach."""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from opsagent import Capability, Outcome, hookimpl
from opsagent.capability import DeclarationError
from opsagent.testing import Harness


@attrs.frozen
class Item:
    name: str


@attrs.frozen
class Batch:
    batch: str
    items: list[Item]
    stall_after: int = -1  # the doer hangs after this many items (-1: never)


def work(inp: Batch, job: Any) -> Outcome:
    done = []
    for i, item in enumerate(inp.items):
        if i == inp.stall_after:
            time.sleep(60)
        done.append(Outcome.ok(done=item.name) if item.name != "bad" else Outcome.error("bad item"))
    failed = any(not o.succeeded for o in done)
    job_outcome = Outcome.error("an item failed") if failed else Outcome.ok(n=len(done))
    return job_outcome.with_items(done)


def declaration(isolation: str = "process") -> Capability:
    return Capability(
        msg_type="batch_work",
        input=Batch,
        doer=work,
        events={"ok": "batch_item_done", "error": "batch_item_failed"},
        event_defaults={"timeout": {"status": "timeout"}, "ok": {"status": "done"}},
        time_limit=1.0,
        extra_time=lambda inp: 0.5 * len(inp.items),
        items=lambda inp: [{"item": it.name} for it in inp.items],
        echo=lambda inp: {"batch": inp.batch},
        isolation=isolation,  # type: ignore[arg-type]
    )


def plugin_module(isolation: str) -> types.ModuleType:
    mod = types.ModuleType(f"opsagent_test_batch_{isolation}")

    @hookimpl
    def register_capabilities(register: Callable[[Capability], None]) -> None:
        register(declaration(isolation))

    mod.register_capabilities = register_capabilities  # type: ignore[attr-defined]
    mod.work = work  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    return mod


def body(names: list[str], stall_after: int = -1) -> dict[str, Any]:
    return {"batch": "b1", "items": [{"name": n} for n in names], "stall_after": stall_after}


def test_the_time_limit_grows_with_the_input() -> None:
    cap = declaration()
    assert cap.time_limit_for(Batch("b", [Item("a")] * 4)) == 1.0 + 2.0
    assert attrs.evolve(cap, time_limit=10).time_limit_for(Batch("b", [])) == 10.0
    with pytest.raises(DeclarationError, match="items"):
        attrs.evolve(cap, items="not a function")


def test_an_outcome_with_items_round_trips_and_fills_the_items_not_reached() -> None:
    out = Outcome.timeout("too slow").with_items([Outcome.ok(a=1)])
    assert Outcome.from_json(out.to_json()) == out
    assert out.item(0) == Outcome.ok(a=1)
    assert out.item(5) == Outcome.timeout("too slow")


def test_one_event_per_item_each_with_its_own_outcome(tmp_path: Path) -> None:
    # (A process job's events are the same: the outcome comes back from the child as
    # JSON, items included -- test_an_outcome_with_items_round_trips...; the process
    # path end to end is in plugins/panda_ops/tests.)
    h = Harness(tmp=tmp_path, modules=[plugin_module("thread")])
    try:
        rid = h.publish("batch_work", body(["a", "bad", "c"]))
        h.join()
        events = [e for e in h.events if e.get("job_id") == rid]
    finally:
        h.stop()
    assert [(e["msg_type"], e["item"], e["batch"], e["ok"]) for e in events] == [
        ("batch_item_done", "a", "b1", True),
        ("batch_item_failed", "bad", "b1", False),
        ("batch_item_done", "c", "b1", True),
    ]
    assert events[0]["done"] == "a" and events[1]["error"] == "bad item"
    assert events[0]["status"] == "done" and "status" not in events[1]


def test_a_job_killed_at_its_grown_time_limit_gives_every_item_a_timeout_event(
    tmp_path: Path,
) -> None:
    h = Harness(tmp=tmp_path, modules=[plugin_module("thread")])
    try:
        t0 = time.monotonic()
        rid = h.publish("batch_work", body(["a", "b", "c", "d"], stall_after=2))
        h.join(timeout=20)
        took = time.monotonic() - t0
        events = [e for e in h.events if e.get("job_id") == rid]
    finally:
        h.stop()
    assert [e["item"] for e in events] == ["a", "b", "c", "d"]
    assert {e["outcome"] for e in events} == {"timeout"}
    # The host ended it: the declared defaults give its events the readers' fields.
    assert {e["status"] for e in events} == {"timeout"}
    assert "time limit of 3 s" in events[0]["reason"], events[0]  # 1 s + 0.5 s x 4 items
    assert took >= 3.0


def test_a_batch_sent_again_after_its_end_is_answered_with_every_items_event(
    tmp_path: Path,
) -> None:
    import json
    import threading

    h = Harness(tmp=tmp_path, modules=[plugin_module("thread")])
    replies: list[dict[str, Any]] = []
    got = threading.Condition()

    def on_reply(raw: bytes) -> None:
        with got:
            replies.append(json.loads(raw))
            got.notify_all()

    dest = "/queue/harness.batch.reply"
    h.broker.subscribe_queue_callback(dest, on_reply)
    try:
        rid = h.publish("batch_work", body(["a", "b"]), reply_to=dest)
        h.join()
        with got:
            assert got.wait_for(lambda: len(replies) == 2, 10)
        # The caller lost the answers and sends the same request again: the journal
        # answers, one frame per item again, and nothing runs twice.
        h.publish("batch_work", body(["a", "b"]), reply_to=dest, request_id=rid)
        h.join()
        with got:
            assert got.wait_for(lambda: len(replies) == 4, 10)
        on_topic = [e for e in h.events if e.get("job_id") == rid]
    finally:
        h.stop()
    assert [r["item"] for r in replies] == ["a", "b", "a", "b"]
    assert replies[2:] == replies[:2]
    assert len(on_topic) == 2
