"""Hot standby: the active host of an exclusive queue is killed mid-load; the other takes
over, nothing is lost, and nothing runs twice: what the killed host had not acknowledged
is reconciled by the standby."""

from __future__ import annotations

import sys

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from standby import standby  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_the_standby_takes_over_and_nothing_is_lost(broker, tmp_path):
    report = standby(300, kill_at=0.3, work=tmp_path, env=broker, timeout=120)
    summary = {k: v for k, v in report.items() if k != "machine"}
    assert report["sent"] == 300, summary
    # Only the active host received deliveries before the kill.
    assert min(report["journal_rows_at_kill"].values()) == 0, summary
    assert report["takeover_s"] is not None and report["takeover_s"] < 10, summary
    assert report["finished_by_standby"] > 0, summary
    assert report["lost"] == 0, summary
    # What the killed host had started and not acknowledged reached the standby marked
    # redelivered and was reconciled there (tests/host/test_interrupted.py shows both ways a
    # reconciliation goes, deterministically).
    assert report["ran_twice"] == 0, summary
    assert report["processes_left_behind"] == 0, summary
