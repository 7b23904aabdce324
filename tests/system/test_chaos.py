"""The chaos soak in its short form: 400 requests, one broker restart, one host SIGKILL."""

from __future__ import annotations

import sys

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from chaos_soak import soak  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_nothing_lost_under_broker_restart_and_host_kill(broker, tmp_path):
    # A persistent broker of its own, of the kind of the ``broker`` run.
    kind = broker["BROKER"]
    port = {"classic": 61643, "artemis": 61743}[kind]
    report = soak(400, 1, 1, port=port, work=tmp_path, timeout=120, broker_kind=kind)
    summary = {k: v for k, v in report.items() if k != "machine"}
    assert report["sent"] == 400, summary
    assert report["lost"] == 0, summary
    assert report["exactly_one_terminal_outcome"] == 400, summary
    assert report["processes_left_behind"] == 0, summary
    assert all(f["resume_s"] is not None for f in report["faults"]), summary
    # A job running when the host was killed is redelivered and reconciled: its effect
    # never happens twice.
    assert report["side_effect_more_than_once"] == 0, summary
