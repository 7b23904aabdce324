"""``delivery_daily_rebuild``'s Capcom notice: worded from the doer's ``SUMMARY`` line,
a warning on any failure, and -- through a host on the real broker with ``[monitor]``
on -- posted once by the host with the monitor's token, after the action record, to the
fake monitor speaking the real ingest contract."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opsagent import Notice, Outcome
from opsagent.testing import FakeMonitor
from opsagent_epicprod import capabilities, delivery

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from support import Caller, HostProcess  # noqa: E402

STUB = str(ROOT / "tests" / "programs" / "stubdoer.py")
# 03:10 US Eastern on 3 December (08:10 UTC): the nightly rebuild's hour.
NIGHT = datetime(2026, 12, 3, 8, 10, tzinfo=UTC)


def test_a_rebuild_that_recorded_arrivals_names_them_per_campaign():
    summary = {"day": "2026-12-02", "campaigns": {
        "26.10.0": {"totals": {"arrived_files": 12345, "arrived_events": 2_500_000}},
        "25.12.0": {"arrived_files": 3, "arrived_events": 900},
        "idle": {"totals": {"arrived_files": 0}},
        "bad": {"totals": {"arrived_files": "many"}},
    }}
    made = delivery.notice(None, Outcome.ok(summary=summary), NIGHT)
    assert made == Notice(
        source="swf-campaign-delivery", severity="info",
        title="Campaign delivery updated through Dec 2 ET · 25.12.0: 3 files (900 events)"
              " · 26.10.0: 12,345 files (2.5M events)",
        url="/snapper/epicprod/campaign/", dedup_key="delivery-daily:2026-12-02")


def test_without_counts_or_day_the_notice_says_what_it_can():
    empty = delivery.notice(None, Outcome.ok(summary={"day": "2026-12-01", "campaigns": {}}),
                            NIGHT)
    assert empty.title == "Campaign delivery updated through Dec 1 ET · no new files"
    # No day: the rebuild covers every complete Eastern day through yesterday.
    plain = delivery.notice(None, Outcome.ok(summary={"rows": 3}), NIGHT)
    assert (plain.title, plain.dedup_key) == ("Campaign delivery updated through Dec 2 ET",
                                              "delivery-daily:2026-12-02")
    hostile = delivery.notice(None, Outcome.ok(summary={"day": "yesterday", "campaigns": [1]}),
                              NIGHT)
    assert hostile.dedup_key == "delivery-daily:2026-12-02"
    many = {f"c{i:02}": {"arrived_files": 1} for i in range(20)}
    title = delivery.notice(None, Outcome.ok(summary={"campaigns": many}), NIGHT).title
    assert title.endswith("c07: 1 files · 12 more") and len(title) <= 300


@pytest.mark.parametrize("outcome", [
    Outcome.error("ERROR: snapshot store unavailable"),
    Outcome.timeout("timed out after 3600s"),
])
def test_a_failed_rebuild_is_a_warning_keyed_by_the_eastern_date(outcome):
    # 02:30 UTC on 3 December is still 2 December in US Eastern time.
    made = delivery.notice(None, outcome, datetime(2026, 12, 3, 2, 30, tzinfo=UTC))
    assert made == Notice(
        source="swf-campaign-delivery", severity="warning",
        title=f"Campaign delivery nightly rebuild failed ({outcome.reason})",
        url="/logs/", dedup_key="delivery-daily-fail:2026-12-02")


def test_the_declaration_asks_for_it_and_only_there():
    caps = {c.msg_type: c for c in capabilities()}
    assert caps["delivery_daily_rebuild"].doer.program.notice is delivery.notice
    assert [t for t, c in caps.items()
            if getattr(getattr(c.doer, "program", None), "notice", None)] == [
        "delivery_daily_rebuild"]


@pytest.mark.broker
def test_the_host_posts_the_notice_with_the_monitors_token(broker, tmp_path):
    web = tmp_path / "swf-monitor"
    web.mkdir()
    with FakeMonitor(trust_localhost=False, tokens=("monitor-token-5678",)) as mon:
        host = HostProcess(
            tmp_path / "host", broker, name="delivery", paths=(),
            extra={
                "epicprod": {"monitor_root": str(web), "python": STUB},
                "capabilities": {"allow": ["delivery_daily_rebuild"]},
                "monitor": {"enabled": True, "url": mon.url,
                            "public_url": "https://epic-devcloud.org/prod",
                            "heartbeat_seconds": 30},
            },
            env={"SWFMON_TOKEN": "monitor-token-5678"},
        ).start()
        caller = Caller(broker, host.queue, host.topic)
        try:
            (web / "plan.json").write_text(json.dumps({"*": {
                "stdout": 'rebuilding\nSUMMARY {"day": "2026-12-02", "campaigns": '
                          '{"26.10.0": {"totals": {"arrived_files": 40}}}}\n'}}))
            event = caller.wait_event(
                caller.send("delivery_daily_rebuild", {"created_by": "nightly"}, reply=False),
                timeout=30)
            assert event["ok"] is True and event["summary"]["day"] == "2026-12-02"
            assert "notices" not in event
            (web / "plan.json").write_text(json.dumps({"*": {
                "stderr": "Traceback...\nERROR: snapshot store unavailable\n", "exit": 1}}))
            failed = caller.wait_event(
                caller.send("delivery_daily_rebuild", {"created_by": "nightly"}, reply=False),
                timeout=30)
            assert failed["ok"] is False
            end = time.monotonic() + 15
            while len(mon.notices) < 2:
                assert time.monotonic() < end, f"notices: {mon.notices}"
                time.sleep(0.05)
        finally:
            caller.close()
            host.stop()
        notices = mon.notices
        records = mon.action_records()
    assert notices[0] == {
        "source": "swf-campaign-delivery", "severity": "info",
        "title": "Campaign delivery updated through Dec 2 ET · 26.10.0: 40 files",
        "url": "https://epic-devcloud.org/prod/snapper/epicprod/campaign/",
        "dedup_key": "delivery-daily:2026-12-02"}
    assert notices[1]["severity"] == "warning"
    assert notices[1]["title"] == (
        "Campaign delivery nightly rebuild failed (ERROR: snapshot store unavailable)")
    assert notices[1]["url"] == "https://epic-devcloud.org/prod/logs/"
    assert notices[1]["dedup_key"].startswith("delivery-daily-fail:")
    assert len(notices) == 2
    assert [r["extra_data"]["outcome"] for r in records
            if r["funcname"] == "delivery_daily_rebuild"] == ["ok", "error"]
