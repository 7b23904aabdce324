"""The throughput benchmark's figures hold together on a short run against the real broker."""

from __future__ import annotations

import sys

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import journal_sync  # noqa: E402
import steps  # noqa: E402
import throughput  # noqa: E402


def test_steps_time_each_step_of_a_request() -> None:
    got = steps.run(repeat=200)
    assert set(got["steps_us"]) == {
        "stomp.py parses the MESSAGE frame",
        "envelope (JSON) and input (cattrs)",
        "journal: accepted and finished (SQLite, 100 per commit)",
        "two job log lines (loguru)",
        "event JSON, SEND and ACK frames",
    }
    assert all(v > 0 for v in got["steps_us"].values())
    assert got["sum_us"] == pytest.approx(sum(got["steps_us"].values()), abs=0.1)


@pytest.mark.broker
def test_throughput_reports_cpu_of_each_process_and_the_budget(broker, monkeypatch) -> None:
    # The benchmark (and the processes it starts) on the run's broker.
    monkeypatch.setenv("OPSAGENT_BENCH_BROKER", broker["BROKER"])
    # Enough requests that each process's CPU is many clock ticks (10 ms each, as
    # /proc/<pid>/stat counts it): with 400 the raw consumer on Artemis once read 0.
    got = throughput.run(n=2000, rounds=1)
    cpu = got["cpu_us_per_request"]
    assert set(cpu["raw"]) == {"consumer", "broker"}
    assert set(cpu["raw_events"]) == set(cpu["host"]) == {"consumer", "broker", "watcher"}
    # Every process did work for the requests it handled.
    assert all(v > 0 for run in cpu.values() for v in run.values()), cpu
    wall = 1e6 / got["target_per_s"]
    others = cpu["host"]["broker"] + cpu["host"]["watcher"]
    assert got["host_budget_us_at_target"] == pytest.approx(
        min(wall, got["cpus"] * wall - others), abs=0.2)
    assert got["host_budget_us_without_watcher"] == pytest.approx(
        min(wall, got["cpus"] * wall - cpu["host"]["broker"]), abs=0.2)
    assert got["opsagent_per_s"] == got["opsagent_rounds_per_s"][0]


def test_journal_sync_measures_each_write_at_both_levels(tmp_path) -> None:
    got = journal_sync.run(tmp_path, calls=20, rounds=1)
    assert set(got["ops"]) == {"put_note", "start", "finish", "finish_many of 100"}
    for row in got["ops"].values():
        for mode in ("NORMAL", "FULL"):
            assert row[mode]["per_s"] > 0 and 0 < row[mode]["p50_ms"] <= row[mode]["p99_ms"]
        assert row["full_time_ratio"] == round(row["NORMAL"]["per_s"] / row["FULL"]["per_s"], 1)
    table = [line for line in journal_sync.markdown(got) if line.startswith("|")]
    assert len(table) == 2 + len(got["ops"])  # the header, its rule, one row per write
    assert list(tmp_path.iterdir()) == [], "each round's journal is removed"


def test_notify_cost_times_each_observer_in_the_same_run(tmp_path) -> None:
    import notify_cost

    got = notify_cost.run(tmp_path, calls=50, rounds=1)
    assert set(got["job_ended"]) == {"monitor (queue put)", "notify, no rule matches",
                                     "notify, webhook ok", "notify, webhook hung"}
    for row in got["job_ended"].values():
        assert 0 < row["p50_us"] <= row["p99_us"]
    assert got["job_ended"]["monitor (queue put)"]["x_monitor_p50"] == 1.0
    assert len([line for line in notify_cost.markdown(got) if line.startswith("|")]) == 6
