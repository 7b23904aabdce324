"""What a ``[[notify]]`` rule costs the job path, against the monitor's action log, in the
same run.

Each ended job is told to every observer on the worker thread that ran it.  The
monitor's ``job_ended`` puts a record on a bounded queue; the notifier's renders the
message and writes it to its outbox (a SQLite commit, ``synchronous=NORMAL``) -- the price
of a message that survives a SIGKILL.  Timed one call at a time: a rule that does not
match (the floor), the monitor, and a matching rule with its webhook answering ``ok``
(the sender thread writing too) and hung (the sender stuck in a post); rounds alternate.

    .venv/bin/python bench/notify_cost.py [--dir DIR] [--calls 2000] [--rounds 3] [--json FILE]

``--dir``: where the outboxes are made (default ``build/``, the checkout's disk; a tmpfs
would hide the cost of the write).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, machine, pct, report, result_option
from opsagent.host.config import MonitorConfig, NotifyRule
from opsagent.reporting.health import JobEnd, Snapshot
from opsagent.reporting.monitor import Monitor
from opsagent.reporting.notifications import Notifications
from opsagent.testing.http import Response
from opsagent.testing.mattermost import FakeMattermost

END = JobEnd(job_id="j", msg_type="submit_task", status="ok", duration=1.5,
             echo={"task_name": "group.EIC.t1"}, event="submit_task_ok")


def _snapshot() -> Snapshot:
    return Snapshot(state="READY", broker_connected=True, capabilities=(), unavailable={},
                    broken=(), in_flight={}, queued={})


def _timed(calls: int, observer: Any) -> list[float]:
    took = []
    for i in range(calls):
        end = _end(i)
        t = time.perf_counter()
        observer.job_ended(end)
        took.append(time.perf_counter() - t)
    return took


def _end(i: int) -> JobEnd:
    return JobEnd(job_id=f"j{i}", msg_type=END.msg_type, status=END.status,
                  duration=END.duration, echo=END.echo, event=END.event)


def one_round(where: Path, mm: FakeMattermost, calls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    monitor = Monitor(MonitorConfig(enabled=True, url=mm.url, queue_limit=calls + 10),
                      instance="bench", namespace="prodops", token=None, snapshot=_snapshot)
    monitor.start()
    out["monitor (queue put)"] = _timed(calls, monitor)
    monitor.stop()
    for case, mode, rule in (
        ("notify, no rule matches", "ok", NotifyRule(name="b", url_credential="x",
                                                    msg_types=["fetch_*"])),
        ("notify, webhook ok", "ok", NotifyRule(name="b", url_credential="x", msg_types=["*"],
                                                     rate_limit=10**9)),
        ("notify, webhook hung", "hang", NotifyRule(name="b", url_credential="x", msg_types=["*"],
                                                   rate_limit=10**9, timeout_seconds=30)),
    ):
        mm.set("bench", mode)
        directory = Path(tempfile.mkdtemp(prefix="notify-", dir=where))
        n = Notifications([rule], outbox=directory / "notifications.sqlite3",
                          urls={"b": mm.hook("bench")}, instance="bench", namespace="prodops")
        n.start()
        out[case] = _timed(calls, n)
        mm.set("bench", "ok")
        mm.close()  # releases a hung post
        mm.start()
        n.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return out


def run(where: Path, calls: int = 2000, rounds: int = 3) -> dict[str, Any]:
    where.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, list[float]]] = []
    mm = FakeMattermost()
    mm.route("POST", "/api/logs/", Response.json({}, 201))
    mm.route("POST", "/api/systemagents/heartbeat/", Response.json({}, 201))
    mm.start()
    try:
        for _ in range(rounds):
            runs.append(one_round(where, mm, calls))
    finally:
        mm.close()
    cases: dict[str, Any] = {}
    floor = None
    for case in runs[0]:
        values = [v for r in runs for v in r[case]]
        p50 = pct(values, 50) * 1e6
        cases[case] = {"p50_us": round(p50, 1), "p99_us": round(pct(values, 99) * 1e6, 1)}
        if case == "monitor (queue put)":
            floor = p50
    for row in cases.values():
        row["x_monitor_p50"] = round(row["p50_us"] / floor, 1) if floor else None
    return {"machine": machine(), "calls": calls, "rounds": rounds, "dir": str(where),
            "job_ended": cases}


def markdown(result: dict[str, Any]) -> list[str]:
    lines = ["| observer's `job_ended` | p50 µs | p99 µs | p50 × the monitor's |",
             "|---|---:|---:|---:|"]
    for case, row in result["job_ended"].items():
        lines.append(f"| {case} | {row['p50_us']} | {row['p99_us']} | {row['x_monitor_p50']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=ROOT / "build")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    result_option(ap)
    args = ap.parse_args(argv)
    result = run(args.dir, args.calls, args.rounds)
    report(result, markdown(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
