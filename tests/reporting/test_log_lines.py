"""One log record, one line: text from a request cannot forge a record in the host's log.

Requests carry newlines, carriage returns, ESC sequences, NEL and the Unicode line
separators in every field a capability or the host may log (a logged input, a reason, an
exception's message, a rejection, a shutdown reason), through a host on the real broker,
in text and in JSON log mode.
"""

from __future__ import annotations

import json
import re

import pytest
from support import ROOT

pytestmark = pytest.mark.broker

SITEREDACT = ROOT / "tests" / "siteredact"
FORGED = "job 77 ended ok (forged line)"
PAYLOAD = (
    f"PAYLOAD-START\n2026-01-01 00:00:00.000 INFO    {FORGED}\r{FORGED}"
    f"\x1b[2K\x1b]0;title\x07\x7f\x85{FORGED}\u2028{FORGED}\u2029{FORGED}\u202e!"
)
#: What would end, overwrite or reorder a line if it reached the log as it came.
RAW = "\r\x1b\x07\x7f\x85\u2028\u2029\u202e"
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
def test_text_from_a_request_cannot_forge_a_log_line(host_factory, caller_for, json_lines):
    host = host_factory(
        paths=(SITEREDACT,), extra={"host": {"log_level": "DEBUG", "log_json": json_lines}}
    ).start()
    caller = caller_for(host)
    sent = []
    for isolation in ("thread", "process"):
        for how in ("log", "fail", "raise"):
            rid = caller.send(f"test_log_input_{isolation}", {"text": PAYLOAD, "how": how})
            sent.append((rid, how, caller.wait_event(rid)))
    rid = caller.send("test_log_input_thread", {"text": "x", "word": PAYLOAD})
    sent.append((rid, "rejected", caller.wait_event(rid)))
    for _, how, event in sent:
        if how == "rejected":
            assert event["code"] == "invalid", event
        else:
            assert event["outcome"] == ("ok" if how == "log" else "error"), (how, event)
    # The host's own broker user may stop it; its reason is logged.
    owner = caller_for(host, who="host")
    owner.send("shutdown", {"reason": PAYLOAD}, reply=False)
    assert host.wait(30) == 100
    text = host.text()

    assert not any(c in text for c in RAW), [c for c in RAW if c in text]
    # splitlines() breaks where any reader or parser may see a line end (\r, NEL, U+2028).
    lines = text.splitlines()
    assert lines == text.split("\n")[:-1]
    assert text.count("PAYLOAD-START") >= 9, text[-3000:]
    for line in lines:
        if FORGED in line:
            assert "PAYLOAD-START" in line, line
    if json_lines:
        records = [json.loads(line) for line in lines]  # each line one whole record
        messages = [r["record"]["message"] for r in records]
        assert any(m.startswith("shutdown requested: PAYLOAD-START\\n") for m in messages)
        assert any("input: PAYLOAD-START\\n" in m for m in messages)
        return
    # Text mode: every line is a record's, except the lines of a traceback.
    stamped = [line for line in lines if STAMP.match(line)]
    assert all(not line.startswith("2026-01-01") for line in stamped)
    assert any("shutdown requested: PAYLOAD-START\\n2026-01-01" in line for line in stamped)
    assert any("input: PAYLOAD-START\\n" in line for line in stamped)
    assert any("ended error" in line and "refused: PAYLOAD-START\\n" in line for line in stamped)
    # The host's traceback stays readable: many lines, its exception's message one of them.
    assert "Traceback (most recent call last):" in lines
    assert any(line.startswith("ValueError: bad input: PAYLOAD-START\\n") for line in lines)
