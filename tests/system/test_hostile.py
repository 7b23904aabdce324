"""Hostile input through a real host on the real broker: one structured answer each,
the host keeps consuming, and nothing lands outside the cache.

Plus a Hypothesis property over the whole envelope and dispatch path (in-memory host),
and a time-boxed coverage-guided fuzz run (atheris) over the envelope parser.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT

pytestmark = [pytest.mark.broker]

TOKEN = f"pwned{uuid.uuid4().hex[:10]}"
# Each is a path or a shell command that would leave a file named with TOKEN if any part
# of the host or a capability used the string as a path or passed it to a shell.
INJECTIONS = [
    f"../../../{TOKEN}",
    f"/tmp/{TOKEN}",
    f"x; touch /tmp/{TOKEN}",
    f"$(touch /tmp/{TOKEN})",
    f"`touch /tmp/{TOKEN}`",
    f"x\ntouch /tmp/{TOKEN}",
    f"x | tee /tmp/{TOKEN}",
    f"x\x00/tmp/{TOKEN}",
    f"-o/tmp/{TOKEN}",
]

# Every string field of every bundled capability whose value is checked against a pattern
# (the free-text attribution fields `requested_by` and `created_by` only reach logs).
BUNDLED: dict[str, tuple[dict[str, Any], list[str]]] = {
    "fetch_payload_log": ({"scope": "epic", "lfn": "a.log.tgz", "jeditaskid": "1",
                           "pandaid": "2"}, ["scope", "lfn", "jeditaskid", "pandaid"]),
    "submit_task": ({"task_name": "group.EIC.t1", "owner": "someone"}, ["task_name", "owner"]),
    "rucio_snapshot_update": ({"campaigns": ["26.02.0"]}, ["campaigns"]),
    "campaign_provenance_sweep": ({"campaign": "26.02.0"},
                                  ["campaign", "path_filter", "detector_configs"]),
}
CREDENTIALS = ("x509_proxy", "panda_oidc_token", "pcs_token", "rucio_userpass")

DEEP = b"[" * 100_000 + b"]" * 100_000
#: The request_id of a test_echo job the table test runs first; rows then reuse it.
REUSED = f"reused-{uuid.uuid4().hex[:10]}"


def _cases() -> list[tuple[str, bytes, str | None, str]]:
    """``(name, body, expected code or None for ignored, text in the reason)``."""
    def body(**fields: Any) -> bytes:
        return json.dumps({"namespace": "prodops", **fields}).encode()

    cases: list[tuple[str, bytes, str | None, str]] = [
        ("invalid UTF-8", b'{"msg_type": "test_echo", "text": "\xff\xfe"}', "malformed",
         "not valid UTF-8"),
        ("truncated JSON", body(msg_type="test_echo", text="x")[:-3], "malformed",
         "not valid JSON"),
        ("non-object (array)", b'["test_echo"]', "malformed", "must be a JSON object"),
        ("non-object (string)", b'"test_echo"', "malformed", "must be a JSON object"),
        ("non-object (null)", b"null", "malformed", "must be a JSON object"),
        ("10,000-digit integer", b'{"msg_type": "test_echo", "n": ' + b"7" * 10_000 + b"}",
         "malformed", "integer of 10000 digits"),
        ("100,000-deep nesting", DEEP, "malformed", "nested deeper"),
        ("100,000-deep nesting in a field",
         b'{"msg_type": "test_echo", "x": ' + DEEP + b"}", "malformed", "nested deeper"),
        ("NaN", b'{"msg_type": "test_echo", "text": NaN}', "malformed", "NaN"),
        ("Infinity", b'{"msg_type": "test_echo", "text": Infinity}', "malformed", "Infinity"),
        # In a field test_echo ignores: refused by the envelope, not by the schema.
        ("1e999 (infinity by overflow)", b'{"msg_type": "test_echo", "n": 1e999}',
         "malformed", "number 1e999 is out of range"),
        ("100,000-digit float", b'{"msg_type": "test_echo", "n": 0.' + b"7" * 100_000 + b"}",
         "malformed", "number of 100002 characters is too long"),
        ("lone surrogate", b'{"msg_type": "test_echo", "text": "x\\ud800"}', "malformed",
         "$.text: a lone UTF-16 surrogate"),
        ("lone surrogate in a key", b'{"msg_type": "test_echo", "\\udc00": 1}', "malformed",
         "a lone UTF-16 surrogate"),
        ("duplicate keys", b'{"msg_type": "test_echo", "msg_type": "shutdown"}', "malformed",
         "duplicate key"),
        ("msg_type of the wrong type", body(msg_type=["test_echo"]), "malformed",
         "$.msg_type: expected a non-empty string"),
        ("field of the wrong type", body(msg_type="test_echo", text={"a": 1}), "invalid",
         "$.text"),
        ("boolean of the wrong type", body(msg_type="test_echo", fail="yes"), "invalid",
         "$.fail"),
        ("body over the size cap",
         body(msg_type="test_echo", text="a" * ((1 << 20) + 10)), "malformed", "over the cap"),
        ("unknown msg_type", body(msg_type="rm_rf"), "unknown_msg_type", "unknown msg_type"),
        ("full-width digits", body(msg_type="test_side_effect", n="１２３"), "invalid",
         "$.n: expected digits"),
        ("negative digits", body(msg_type="test_side_effect", n=-5), "invalid", "$.n"),
        ("foreign namespace", json.dumps({"msg_type": "test_side_effect", "n": "1",
                                          "namespace": "otherops"}).encode(), None, ""),
        # Another job's id: refused, not answered with that job's outcome.
        ("request_id reused for another msg_type",
         body(msg_type="test_side_effect", n="31", request_id=REUSED), "request_id_reused",
         f"request_id '{REUSED}' is already the id of a test_echo job with another msg_type"),
        ("request_id reused for another input",
         body(msg_type="test_echo", text="not the original", request_id=REUSED),
         "request_id_reused", "test_echo job with another input"),
    ]
    # Destinations the broker would act on in ways the caller chooses: an empty name
    # (ActiveMQ drops the connection that sends to it), a composite, wildcards.
    for value in ("/queue/", "/topic/", "/queue/a,/queue/b", "/topic/>", "/topic/ops.*",
                  "/queue/a b", "/queue/#", "/temp-queue/mine"):
        cases.append((f"destination in reply_to: {value}",
                      body(msg_type="test_echo", text="x", reply_to=value), "malformed",
                      "$.reply_to"))
    for value in INJECTIONS:
        short = value.encode("unicode_escape").decode()[:24]
        cases.append((f"injection in request_id: {short}",
                      body(msg_type="test_echo", request_id=value), "malformed",
                      "$.request_id"))
        cases.append((f"injection in reply_to: {short}",
                      body(msg_type="test_echo", reply_to=value), "malformed", "$.reply_to"))
        cases.append((f"injection in msg_type: {short}", body(msg_type=value),
                      "unknown_msg_type", "unknown msg_type"))
        cases.append((f"injection in test_side_effect.n: {short}",
                      body(msg_type="test_side_effect", n=value), "invalid", "$.n"))
        for msg_type, (good, fields) in BUNDLED.items():
            for field in fields:
                bad = [value] if field in ("campaigns", "detector_configs") else value
                # A value the field's pattern allows (an lfn may start with '/') is
                # accepted: its answer is then the job's own terminal event.
                cases.append((f"injection in {msg_type}.{field}: {short}",
                              body(msg_type=msg_type, request_id=uuid.uuid4().hex,
                                   **{**good, field: bad}), "invalid|job", f"$.{field}"))
    return cases


CASES = _cases()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _token_files() -> list[str]:
    found = []
    for root in (Path("/tmp"), ROOT, Path.home()):
        try:
            found += [str(p) for p in root.rglob(f"*{TOKEN}*")]
        except OSError:
            continue
    return found


def test_every_hostile_input_gets_one_answer_and_nothing_escapes(host_factory, caller_for,
                                                                  tmp_path):
    creds = {}
    for name in CREDENTIALS:
        path = tmp_path / f"cred-{name}"
        path.write_text("not-a-real-secret\n")
        path.chmod(0o600)
        creds[f"credentials.{name}"] = {"file": str(path)}
    host = host_factory(extra=creds).start()
    caller = caller_for(host)
    assert caller.wait_event(caller.send("test_echo", {"text": "original"}, reply=False,
                                         request_id=REUSED))["outcome"] == "ok"
    before = _tree(host.tmp)
    failures: list[str] = []
    accepted: list[str] = []
    for name, raw, code, reason in CASES:
        seen = len(caller.events)
        caller.send_raw(raw)
        if code == "invalid|job":
            caller.wait_event(json.loads(raw)["request_id"], timeout=30)
        # A marker request behind it: once its event is here, the host has finished with
        # the hostile one (one receiver thread, one publishing connection, in order).
        marker = caller.send("test_echo", {"text": name}, reply=False)
        caller.wait_event(marker, timeout=20)
        with caller.cond:
            answers = [e for e in caller.events[seen:]
                       if marker not in (e.get("request_id"), e.get("job_id"))]
        if code is None:
            if answers:
                failures.append(f"{name}: expected to be ignored, got {answers}")
            continue
        rejected = [e for e in answers if e.get("msg_type") == "request_rejected"]
        if code == "invalid|job" and len(answers) == 1 and not rejected:
            if "outcome" not in answers[0]:
                failures.append(f"{name}: expected a rejection or a job's end, got {answers}")
            accepted.append(name)
            continue
        if len(answers) != 1 or len(rejected) != 1:
            failures.append(f"{name}: expected one rejection, got {answers}")
            continue
        got = rejected[0]
        said = got["reason"] + " ".join(got["errors"])
        if got["code"] not in code.split("|") or reason not in said:
            failures.append(f"{name}: expected {code} with {reason!r}, got {got}")
    assert not failures, "\n".join(failures)
    # Only values the fields' patterns allow get through: absolute Rucio names.
    assert all(".lfn: /tmp/" in name for name in accepted), accepted
    assert host.proc is not None and host.proc.poll() is None, host.text()[-3000:]
    new = {p for p in _tree(host.tmp) - before
           if not p.startswith(("cache", "state")) and p != host.log.name}
    assert not new, f"written outside the cache and state: {sorted(new)}"
    assert not _token_files(), _token_files()
    assert not (host.tmp / "cache" / "side-effects" / "31.done").exists(), "a reuse ran"
    assert "Traceback" not in host.text(), host.text()[-3000:]
    assert "connection lost" not in host.text(), "no input may cost the host its connection"


def test_missing_namespace_is_served_as_the_old_agent_did(host_factory, caller_for):
    # docs/wire.md: the old agent accepted messages without a namespace; the default keeps that.
    host = host_factory().start()
    caller = caller_for(host)
    rid = caller.send("test_echo", {"text": "hi"}, reply=False, namespace=None)
    assert caller.wait_event(rid)["msg_type"] == "test_echoed"


def test_missing_namespace_is_ignored_when_required(host_factory, caller_for):
    host = host_factory(extra={"host": {"require_namespace": True}}).start()
    caller = caller_for(host)
    ignored = caller.send("test_side_effect", {"n": "1"}, reply=False, namespace=None)
    marker = caller.send("test_echo", {"text": "after"}, reply=False)
    caller.wait_event(marker)
    assert caller.events_for(ignored) == []
    assert not (host.tmp / "cache" / "side-effects" / "1.done").exists()


def test_a_request_id_reused_for_other_work_is_refused_while_its_job_runs_and_after(
        host_factory, caller_for):
    # A time limit a loaded machine cannot hit: the job must end ok, with its own input.
    host = host_factory(extra={"capability.test_sleep": {"time_limit": 60}}).start()
    first, other = caller_for(host), caller_for(host)
    rid = first.send("test_sleep", {"seconds": 1.0, "key": "reuse"})
    host.wait_log(f"job {rid} started")
    # While it runs: the same id for another input, and for another msg_type.
    other.send("test_sleep", {"seconds": 0.1, "key": "reuse"}, request_id=rid)
    other.send("test_side_effect", {"n": "41"}, request_id=rid)
    for msg_type, what in (("test_sleep", "another input"),
                           ("test_side_effect", "another msg_type")):
        refused = other.wait_reply(lambda r, m=msg_type: r.get("request") == m)
        assert refused["msg_type"] == "request_rejected", refused
        assert refused["code"] == "request_id_reused" and refused["request_id"] == rid
        assert f"already the id of a test_sleep job with {what}" in refused["reason"]
    ended = first.wait_reply(lambda r: r.get("job_id") == rid)
    assert (ended["outcome"], ended.get("slept")) == ("ok", 1.0), ended  # the original ran
    # After its end: refused again, where the journal used to answer with its outcome.
    other.send("test_side_effect", {"n": "41"}, request_id=rid)
    marker = other.send("test_echo", {"text": "fence"})
    other.wait_reply(lambda r: r.get("job_id") == marker)
    refusals = [r for r in other.replies if r.get("request_id") == rid]
    assert [r["code"] for r in refusals] == ["request_id_reused"] * 3, refusals
    # The same request again from a new connection (a new reply_to) is still answered.
    late = caller_for(host)
    late.send("test_sleep", {"seconds": 1.0, "key": "reuse"}, request_id=rid)
    assert late.wait_reply(lambda r: r.get("job_id") == rid) == ended
    assert host.text().count(f"job {rid} started") == 1
    assert not (host.tmp / "cache" / "side-effects" / "41.done").exists()
    assert host.stop() == 0
    # Every message was acknowledged: a second host on the queue gets nothing.
    second = host_factory(queue=host.queue, topic=host.topic).start()
    fence = first.send("test_echo", {"text": "after"}, reply=False)
    first.wait_event(fence)
    assert second.text().count(" started (") == 1, second.text()[-2000:]  # the fence
    assert rid not in second.text(), second.text()[-2000:]


# -- the whole envelope + dispatch path, in memory, under Hypothesis ----------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "msg_type": st.sampled_from(["test_echo", "test_side_effect", "test_noop", "nope",
                                     "health_ping"]) | _json,
        "namespace": st.sampled_from(["prodops", "otherops"]) | _json,
        "request_id": st.text(min_size=1, max_size=20) | st.integers() | _json,
        "reply_to": st.sampled_from(["/queue/harness.reply", "bare"]) | _json,
        "text": _json,
        "fail": _json,
        "n": st.sampled_from(["1", "１２", "../x", 5, -3]) | _json,
        "seconds": _json,
    },
)
_bodies = (
    _fields.map(lambda d: json.dumps(d).encode())
    | _fields.map(lambda d: json.dumps(d).encode()[:-1])
    | st.binary(max_size=200)
)


@pytest.fixture(scope="module")
def memhost(tmp_path_factory):
    import opsagent_testcaps
    from opsagent.testing import Harness

    h = Harness(tmp=tmp_path_factory.mktemp("hyp"), modules=[opsagent_testcaps])
    yield h
    h.stop()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=_bodies)
def test_any_body_gets_at_most_one_answer_and_the_host_keeps_going(memhost, raw):
    h = memhost
    seen = len(h.events)
    received = h.host.dispatcher.counts["received"]
    h.publish_raw(raw)
    marker = h.publish("test_echo", {"text": "marker"})
    h.wait_for(marker, timeout=10)
    assert h.host.dispatcher.counts["received"] >= received + 2
    assert h.host.dispatcher.counts["internal"] == 0
    mine = [e for e in h.events[seen:] if marker not in (e.get("request_id"), e.get("job_id"))]
    # A job's end may come after the marker's; the receiver's own answer never does.
    rejections = [e for e in mine if e.get("msg_type") == "request_rejected"]
    assert len(rejections) <= 1, mine
    for e in rejections:
        # Examples share the host's journal: a request_id may come back for other work.
        assert e["code"] in {"malformed", "unknown_msg_type", "invalid", "unavailable",
                             "duplicate", "busy", "request_id_reused"}, e
        assert e["reason"]


# -- coverage-guided fuzzing of the parser ------------------------------------------------

FUZZ_SECONDS = int(os.environ.get("OPSAGENT_FUZZ_SECONDS", "20"))


def test_atheris_finds_no_exception_but_envelope_error(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, (_, raw, _, _) in enumerate(CASES[:20]):
        (corpus / f"seed{i}").write_bytes(raw[:4096])
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parents[1] / "fuzz_envelope.py"),
         f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=2048", "-max_len=4096",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 60,
    )
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, f"fuzzer found a crash:\n{tail}"
    runs = [line for line in proc.stderr.splitlines() if "Done" in line and "runs" in line]
    assert runs, tail
    assert int(runs[-1].split("Done ")[1].split()[0]) > 1000, runs[-1]
