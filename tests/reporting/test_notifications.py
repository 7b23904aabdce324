"""Completion notifications: what a rule posts, to a server speaking Mattermost's
incoming-webhook contract; what a failing, refusing, limiting or hung webhook costs (the
job path nothing, the messages nothing); what survives a restart; what never shows."""

from __future__ import annotations

import json
import math
import stat
import time
from pathlib import Path

import pytest
from loguru import logger
from opsagent.credentials.redaction import Redactor
from opsagent.host.config import NotifyRule
from opsagent.reporting.health import JobEnd
from opsagent.reporting.notifications import Notifications, matches, retry_after, url_secrets
from opsagent.reporting.template import TemplateError, check_template, render
from opsagent.testing import FakeMattermost


def wait_until(pred, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def end(job_id: str = "j1", msg_type: str = "submit_task", status: str = "ok", **kw) -> JobEnd:
    kw.setdefault("echo", {"task_name": "t1"})
    return JobEnd(job_id=job_id, msg_type=msg_type, status=status, duration=1.25, **kw)


@pytest.fixture
def mm():
    with FakeMattermost() as server:
        yield server


@pytest.fixture
def notifier(tmp_path: Path):
    made: list[Notifications] = []

    def make(rules: list[NotifyRule], urls: dict[str, str], **kw) -> Notifications:
        n = Notifications(rules, outbox=tmp_path / "state" / "notifications.sqlite3", urls=urls,
                          instance="ops-test", namespace="prodops", **kw)
        n.start()
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()


def rule(**kw) -> NotifyRule:
    kw.setdefault("name", "ops")
    kw.setdefault("url_credential", "mattermost_ops")
    kw.setdefault("msg_types", ["*"])
    return NotifyRule(**kw)


def test_a_job_end_is_posted_as_mattermost_shows_it(mm, notifier):
    url = mm.hook("ops")
    n = notifier([rule(channel="prodops-alerts", icon_url="https://example.org/bot.png")],
                 {"ops": url})
    n.job_ended(end(status="error", reason="PCS answered 500", event="submit_task_failed",
                    data={"panda_task_id": 12345}))
    wait_until(lambda: mm.posts("ops"))
    [posted] = mm.posts("ops")
    assert posted["text"] == (":x: submit\\_task **error** in 1.250 s on ops-test "
                              "(job j1, task\\_name=t1): PCS answered 500")
    assert posted["username"] == "opsagent" and posted["channel"] == "prodops-alerts"
    assert posted["icon_url"] == "https://example.org/bot.png"
    assert posted["props"] == {"opsagent_id": "ops/j1"}
    [attachment] = posted["attachments"]
    assert attachment["color"] == "#c62828"
    assert {"title": "outcome", "value": "error", "short": True} in attachment["fields"]
    request = mm.requests_to("POST", url.split(mm.url)[1])[0]
    assert request.header("Content-Type") == "application/json"
    assert request.header("Idempotency-Key") == "ops/j1"
    wait_until(lambda: n.outbox.counts() == {"sent": 1})


def test_rules_choose_jobs_by_msg_type_and_outcome_globs():
    submits = rule(msg_types=["submit_*"])
    failed_fetches = rule(msg_types=["fetch_payload_log"], outcomes=["error", "timeout"])
    assert matches(submits, "submit_task", "ok") and matches(submits, "submit_task", "error")
    assert not matches(submits, "fetch_payload_log", "error")
    assert matches(failed_fetches, "fetch_payload_log", "timeout")
    assert not matches(failed_fetches, "fetch_payload_log", "ok")


def test_templates_are_plain_field_names_and_hostile_values_stay_text():
    for bad in ("{job_id.__class__}", "{echo[0]}", "{job_id!r}", "{reason:>99999}", "{}",
                "{0}", "{Job_ID}", "{job_id", "}"):
        with pytest.raises(TemplateError):
            check_template(bad)
        with pytest.raises(ValueError, match="template"):
            rule(template=bad)
    assert render("{{literal}} {job_id} {missing}.", {"job_id": "{reason}"}) == \
        "{literal} {reason} ."
    assert len(render("{x}", {"x": "y" * 100_000})) == 1000


def test_a_hostile_reason_mentions_nobody_and_links_nowhere(mm, notifier):
    n = notifier([rule()], {"ops": mm.hook("ops")})
    hostile = "{job_id.__class__} @channel @all [click](https://evil.example) **x**\n# big"
    n.job_ended(end(status="error", reason=hostile, echo={"task_name": "@here"}))
    wait_until(lambda: mm.posts("ops"))
    text = mm.posts("ops")[0]["text"]
    assert "{job\\_id.\\_\\_class\\_\\_}" in text
    assert "@channel" not in text and "@all" not in text and "@here" not in text
    assert "@\u200bchannel" in text
    assert "\\[click\\]\\(https://evil.example\\)" in text and "\\*\\*x\\*\\*" in text
    assert "\n" not in text  # a value cannot start a heading of its own


def test_over_the_rate_limit_jobs_are_told_in_one_digest(mm, notifier):
    n = notifier([rule(rate_limit=2, rate_window_seconds=3.0)], {"ops": mm.hook("ops")})
    # Just after a window starts, so all five land in it (with room for a loaded machine).
    time.sleep(3.0 - time.time() % 3.0 + 0.01)
    for i in range(5):
        n.job_ended(end(f"j{i}", status="error" if i % 2 else "ok"))
    wait_until(lambda: len(mm.posts("ops")) == 3, timeout=8)
    first, second, digest = mm.posts("ops")
    assert [first["props"]["opsagent_id"], second["props"]["opsagent_id"]] == ["ops/j0", "ops/j1"]
    assert "3 more jobs ended on ops-test" in digest["text"]
    assert "submit\\_task ok ×2, submit\\_task error ×1" in digest["text"]
    assert "j2, j3, j4" in digest["text"]
    assert digest["props"]["opsagent_id"].startswith("ops/digest/")
    # The webhook has the digest before the notifier hears its 200 and records it as sent.
    wait_until(lambda: n.outbox.counts() == {"sent": 3, "digested": 3}, timeout=8)


def test_a_429_is_waited_out_as_its_retry_after_asks(mm, notifier):
    url = mm.hook("ops")
    mm.set("ops", "rate_limited", retry_after=1)
    n = notifier([rule()], {"ops": url})
    n.job_ended(end("j1"))
    n.job_ended(end("j2"))
    wait_until(lambda: mm.requests)
    mm.set("ops", "ok")
    wait_until(lambda: len(mm.posts("ops")) == 2)
    first, *_, last = mm.requests
    # One refused post, then nothing until Retry-After, then both in order.
    assert len(mm.requests) == 3
    assert mm.requests[1].received - first.received >= 0.9
    assert [p["props"]["opsagent_id"] for p in mm.posts("ops")] == ["ops/j1", "ops/j2"]


def test_a_payload_the_webhook_refuses_is_dropped_once_and_said(mm, notifier, tmp_path):
    mm.hook("ops")
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR")
    try:
        n = notifier([rule()], {"ops": f"{mm.url}/hooks/no-such-hook-key"})
        n.job_ended(end("j1"))
        wait_until(lambda: n.outbox.counts() == {"failed": 1})
    finally:
        logger.remove(sink)
    time.sleep(0.3)
    assert len(mm.requests) == 1, "a 400 is not retried"
    [line] = [x for x in lines if "refused message ops/j1" in x]
    assert "HTTP 400 web.incoming_webhook.invalid.app_error" in line
    assert "no-such-hook-key" not in line and mm.url not in line


def test_a_disabled_hook_is_asked_once_per_back_off_and_gets_everything_when_enabled(
        mm, notifier):
    mm.hook("ops")
    mm.set("ops", "disabled")
    n = notifier([rule(max_backoff_seconds=1.0)], {"ops": mm.hook("ops")})
    for i in range(10):
        n.job_ended(end(f"j{i}"))
    time.sleep(1.5)
    tries = len(mm.requests)
    assert 1 <= tries <= 3, f"{tries} posts to a disabled hook in 1.5 s for 10 messages"
    assert all(r.json()["props"]["opsagent_id"] == "ops/j0" for r in mm.requests)
    mm.set("ops", "ok")
    wait_until(lambda: len(mm.posts("ops")) == 10, timeout=5)
    assert [p["props"]["opsagent_id"] for p in mm.posts("ops")] == [f"ops/j{i}" for i in range(10)]


def test_a_hung_webhook_costs_the_job_path_nothing(mm, notifier):
    url = mm.hook("ops")
    mm.set("ops", "hang")
    n = notifier([rule(timeout_seconds=0.5, rate_limit=1000)], {"ops": url})
    n.job_ended(end("j0"))
    wait_until(lambda: mm.requests)  # the sender is now stuck in a post
    started = time.perf_counter()
    for i in range(1, 101):
        n.job_ended(end(f"j{i}"))
    took = time.perf_counter() - started
    # A local SQLite commit each, no network: far below one post's timeout.
    assert took < 0.5, f"100 job ends took {took:.3f} s with the webhook hung"
    assert n.outbox.counts() == {"pending": 101}
    started = time.monotonic()
    n.stop()
    assert time.monotonic() - started < 0.5 + 2.5


def test_what_waits_survives_a_restart_and_is_posted_once(mm, tmp_path):
    url = mm.hook("ops")
    mm.set("ops", "down")
    path = tmp_path / "state" / "notifications.sqlite3"
    first = Notifications([rule()], outbox=path, urls={"ops": url}, instance="a",
                          namespace="prodops")
    first.start()
    for i in range(3):
        first.job_ended(end(f"j{i}"))
    wait_until(lambda: mm.requests)
    first.stop()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mm.set("ops", "ok")
    second = Notifications([rule()], outbox=path, urls={"ops": url}, instance="a",
                           namespace="prodops")
    second.start()
    # The same job told again (a redelivered job that ended twice) is not posted again.
    second.job_ended(end("j1"))
    try:
        wait_until(lambda: len(mm.posts("ops")) == 3)
        time.sleep(0.3)
        assert [p["props"]["opsagent_id"] for p in mm.posts("ops")] == ["ops/j0", "ops/j1",
                                                                           "ops/j2"]
    finally:
        second.stop()


def test_a_json_webhook_gets_the_event_and_an_idempotency_key(mm, notifier):
    got: list = []
    mm.route("POST", "/generic", lambda req: got.append(req) or "ok")
    n = notifier([rule(kind="webhook", template="{msg_type} {outcome}")],
                 {"ops": f"{mm.url}/generic"})
    n.job_ended(end("j9", status="timeout", reason="time limit 5 s", data={"n": 3}))
    wait_until(lambda: got)
    body = got[0].json()
    assert got[0].header("Idempotency-Key") == "ops/j9" == body["id"]
    assert body["text"] == "submit_task timeout" and body["type"] == "job"
    assert body["event"]["ok"] is False and body["event"]["data"] == {"n": 3}
    assert body["event"]["echo"] == {"task_name": "t1"}


def test_secrets_never_reach_a_message_or_a_log_line(mm, notifier):
    url = mm.hook("ops")
    # The second needs JSON escapes: it is matched before the message is JSON.
    redactor = Redactor(["s3cr3t-token-value-123456", 'pa"ss\\w0rd-\u00e9-9876'])
    redactor.learn(*url_secrets(url))
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG")
    try:
        mm.set("ops", "down")
        n = notifier([rule(max_backoff_seconds=1.0)], {"ops": url}, scrub=redactor.scrub)
        n.job_ended(end(status="error",
                        reason="401 for Authorization: Bearer s3cr3t-token-value-123456 "
                               'after login with pa"ss\\w0rd-\u00e9-9876',
                        echo={"url": url}))
        wait_until(lambda: mm.requests)
        mm.set("ops", "ok")
        wait_until(lambda: mm.posts("ops"))
    finally:
        logger.remove(sink)
    posted = json.dumps(mm.posts("ops"))
    assert "s3cr3t-token-value" not in posted
    assert "w0rd" not in posted and "w0rd" not in mm.posts("ops")[0]["text"]
    key = url.rsplit("/", 1)[1]
    assert key not in posted and "[redacted]" in posted
    logged = "".join(lines)
    assert "posting to 127.0.0.1 failed (HTTP 503)" in logged
    assert key not in logged and url not in logged
    assert key not in Path(n.outbox_path).read_bytes().decode(errors="replace")


def test_retry_after_is_read_as_seconds_or_a_date():
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_notify_rules_are_checked_when_the_configuration_is_read():
    with pytest.raises(ValueError, match="kind 'slack'"):
        rule(kind="slack")
    with pytest.raises(ValueError, match="url_credential"):
        rule(url_credential="")
    with pytest.raises(ValueError, match="rate_limit"):
        rule(rate_limit=0)


def test_a_message_not_posted_in_time_is_given_up_and_said(mm, notifier):
    mm.hook("ops")
    mm.set("ops", "down")
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING")
    try:
        n = notifier([rule(max_backoff_seconds=1.0, expire_seconds=0.5)], {"ops": mm.hook("ops")})
        n.job_ended(end("j1"))
        wait_until(lambda: n.outbox.counts() == {"expired": 1})
    finally:
        logger.remove(sink)
    assert any("message ops/j1 given up: not posted within 0.5 s" in x for x in lines)
    assert mm.posts("ops") == []


def test_an_outcome_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match=r"outcomes \['eror'\] match no outcome; known: error"):
        rule(outcomes=["eror"])
    assert rule(outcomes=["un*", "error"]).outcomes == ["un*", "error"]


def test_the_host_tells_each_rule_the_jobs_it_asks_for(opsagent_harness, opsagent_credentials,
                                                        mm):
    import opscaps

    got: list = []
    mm.route("POST", "/generic", lambda req: got.append(req.json()) or "ok")
    opsagent_credentials.add("mattermost_ops", mm.hook("fetches"))
    opsagent_credentials.add("ops_webhook", f"{mm.url}/generic")
    h = opsagent_harness(modules=[opscaps], config={
        **opsagent_credentials.config(),
        "notify": [
            {"name": "fetches", "url_credential": "mattermost_ops",
             "msg_types": ["fetch_*"], "template": "{event} for PanDA job {pandaid} ({outcome})"},
            {"name": "failed-work", "kind": "webhook", "url_credential": "ops_webhook",
             "msg_types": ["ops_*"], "outcomes": ["error"], "template": "{event}: {reason}"},
        ]})
    h.send("fetch_payload_log", {"pandaid": 4242, "jeditaskid": "1001"})
    h.send("ops_work", {})
    h.send("ops_work", {"fail": True})
    wait_until(lambda: mm.posts("fetches") and got)
    time.sleep(0.3)
    [fetched] = mm.posts("fetches")
    assert fetched["text"] == "payload\\_log\\_ready for PanDA job 4242 (ok)"
    [failed] = got
    assert failed["text"] == "ops_work_failed: asked to fail"
    assert failed["event"]["outcome"] == "error" and failed["event"]["msg_type"] == "ops_work"


def test_a_full_disk_loses_messages_and_says_so_once_but_never_fails_a_job(mm, tmp_path):
    from support import fill, tmpfs

    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO")
    with tmpfs(tmp_path / "state", "1m") as state:
        n = Notifications([rule(rate_limit=1000)], outbox=state / "notifications.sqlite3",
                          urls={"ops": mm.hook("ops")}, instance="a", namespace="prodops")
        n.start()
        try:
            filler = fill(state)
            for i in range(200):  # a page or two of WAL may still fit; then nothing does
                n.job_ended(end(f"full{i}", reason="x" * 900))
            assert n.lost > 0
            filler.unlink()
            n.job_ended(end("after"))
            wait_until(lambda: any(p["props"]["opsagent_id"] == "ops/after"
                                   for p in mm.posts("ops")))
        finally:
            n.stop()
            logger.remove(sink)
    assert sum("could not be kept" in x for x in lines) == 1
    assert any("the outbox can be written again" in x for x in lines)


def test_the_documented_configuration_is_read_as_shown(tmp_path):
    import re

    from opsagent.host import config as configuration
    from support import ROOT

    page = (ROOT / "docs" / "notifications.md").read_text()
    example = re.search(r"```toml\n(.*?)```", page, re.S).group(1)
    (tmp_path / "opsagent.toml").write_text(example)
    cfg = configuration.load(tmp_path / "opsagent.toml")
    assert [(r.name, r.kind, r.msg_types, r.outcomes) for r in cfg.notify] == [
        ("submits", "mattermost", ["submit_*"], ["*"]),
        ("failed-fetches", "webhook", ["fetch_payload_log"], ["error", "timeout"])]
    assert cfg.credentials["mattermost_prodops"].file.endswith("mattermost_prodops")


def test_the_messages_of_a_rule_no_longer_configured_are_settled(mm, tmp_path):
    path = tmp_path / "notifications.sqlite3"
    mm.hook("old")
    mm.set("old", "down")
    first = Notifications([rule(name="old", rate_limit=1)], outbox=path,
                          urls={"old": mm.hook("old")}, instance="a", namespace="prodops")
    first.start()
    first.job_ended(end("j1"))
    first.job_ended(end("j2"))  # over the limit: waits for a digest
    first.stop()
    second = Notifications([rule(name="new")], outbox=path, urls={"new": mm.hook("new")},
                           instance="a", namespace="prodops")
    second.start()
    try:
        wait_until(lambda: second.outbox.counts() == {"expired": 2})
    finally:
        second.stop()
    assert mm.posts("old") == [] and mm.posts("new") == []


def test_a_rule_whose_webhook_is_down_holds_up_no_other_rule(mm, notifier):
    mm.hook("down")
    mm.set("down", "down")
    n = notifier([rule(name="down", rate_limit=1000, max_backoff_seconds=60.0),
                  rule(name="up", rate_limit=1000)], {"down": mm.hook("down"), "up": mm.hook("up")})
    n.job_ended(end("first"))  # both rules: "down" fails and is held for a while
    wait_until(lambda: mm.posts("up"))
    for i in range(120):  # more than a batch of the held rule's messages, due at once
        n.job_ended(end(f"d{i}", msg_type="submit_task"))
    started = time.monotonic()
    wait_until(lambda: len(mm.posts("up")) == 121)
    took = time.monotonic() - started
    # The held rule is asked once per back-off (1 s, 2 s, 4 s...), not once per message.
    down = len(mm.requests) - 121
    assert 1 <= down <= 2 + math.log2(1 + took), f"{down} posts to a dead hook in {took:.1f} s"


def test_the_documented_message_is_what_is_posted(mm, notifier):
    import re

    from support import ROOT

    page = (ROOT / "docs" / "notifications.md").read_text()
    shown = json.loads(re.findall(r"```json\n(.*?)```", page, re.S)[0])
    n = notifier([rule(name="submits", msg_types=["submit_*"], channel="prodops-alerts")],
                 {"submits": mm.hook("ops")})
    n.instance = "opsagent-pandaserver02"
    n.job_ended(JobEnd(job_id="7f3c2a9e51d04b7c", msg_type="submit_task", status="unrecorded",
                       duration=41.207,
                       reason="task 123456 submitted; recording it in PCS failed: HTTP 503",
                       echo={"task_name": "epic.26.06.0.pythia8.DIS_NC_18x275"},
                       event="submit_task_unrecorded", data={"panda_task_id": 123456}))
    wait_until(lambda: mm.posts("ops"))
    assert mm.posts("ops") == [shown]
