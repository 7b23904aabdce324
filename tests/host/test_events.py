"""The terminal event's fields for each kind of outcome."""

from __future__ import annotations

import attrs
import pytest
from opsagent import Capability, Outcome
from opsagent.host.events import job_event


@attrs.frozen
class In:
    x: str = ""


CAP = Capability(msg_type="thing", input=In, doer=lambda inp, job: None,
                 events={"ok": "thing_done", "error": "thing_failed"})


def event(outcome: Outcome) -> dict:
    return job_event(CAP, outcome, {"x": "1"}, job_id="j", sender="s", namespace="n")


@pytest.mark.parametrize("outcome, ok, name, error", [
    (Outcome.ok(), True, "thing_done", None),
    (Outcome.skipped("nothing new"), True, "thing_done", None),
    (Outcome.warning("proxy expires in 3 days"), True, "thing_done", None),
    (Outcome.error("boom"), False, "thing_failed", "boom"),
    (Outcome.unverified("status still running"), False, "thing_failed", "status still running"),
    (Outcome.timeout("timed out after 5s"), False, "thing_failed", "timed out after 5s"),
])
def test_ok_error_and_reason_follow_the_outcome(outcome, ok, name, error):
    body = event(outcome)
    assert (body["msg_type"], body["ok"], body["outcome"]) == (name, ok, outcome.status)
    assert body.get("error") == error
    assert body.get("reason") == outcome.reason
