"""What ``PRAGMA synchronous=FULL`` costs the journal's writes against ``NORMAL``, on
this machine's disk, in the same run.

The journal (WAL) makes its group commits (acceptances, finishes) at ``NORMAL`` and the
commits that guard side effects (a job's notes, the start of a job whose capability
declares ``reconcile``) at ``FULL``: see ``core/opsagent/journal.py``.  For each write
the host makes, timed one call at a time on a fresh journal opened each way, rounds
alternating: calls per second and per-call latency (p50, p99), and the ratio.

    .venv/bin/python bench/journal_sync.py [--dir DIR] [--calls 400] [--json FILE]

``--dir`` is where the journals are made (default ``build/``, on the disk of the
checkout; point it at the state directory's filesystem to measure that one, never at a
tmpfs, where a sync costs nothing).  ``bench/run_all.py`` puts :func:`markdown` of the
result into docs/performance.md (its own section).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, machine, pct, report, result_option
from opsagent.host.journal import Journal
from opsagent.outcome import Outcome

BEGIN, END = "<!-- journal_sync:begin -->", "<!-- journal_sync:end -->"
MODES = {"NORMAL": ("NORMAL", "NORMAL"), "FULL": ("FULL", "FULL")}
BATCH = 100
BODY = {"msg_type": "submit_task", "namespace": "prodops", "task_name": "group.EIC.t1"}


def _timed(
    calls: int, setup: Callable[[int], object], call: Callable[[int], object]
) -> list[float]:
    """Seconds each ``call(i)`` took, ``setup(i)`` untimed before it."""
    took = []
    for i in range(calls):
        setup(i)
        t = time.perf_counter()
        call(i)
        took.append(time.perf_counter() - t)
    return took


def one_round(where: Path, mode: str, calls: int) -> dict[str, list[float]]:
    """Every write, on a fresh journal opened at ``mode``: seconds per call."""
    synchronous, guarded = MODES[mode]
    directory = Path(tempfile.mkdtemp(prefix=f"journal-{mode}-", dir=where))
    try:
        j = Journal(directory / "journal.sqlite3", synchronous=synchronous, guarded=guarded)

        def accept(i: int) -> None:
            j.accept(f"s{i}", "submit_task", None, BODY, "d")

        def accept_batch(i: int) -> None:
            for k in range(BATCH):
                j.accept(f"b{i}.{k}", "submit_task", None, BODY, "d")

        out = {
            "put_note": _timed(
                calls, lambda i: None, lambda i: j.put_note(f"n{i}", "jeditaskid", str(4000 + i))
            ),
            # As the host starts a job: its acceptance still held, committed with it.
            "start": _timed(calls, accept, lambda i: j.start(f"s{i}")),
            "finish": _timed(
                calls, lambda i: None, lambda i: j.finish(f"s{i}", Outcome.ok(n=i), published=True)
            ),
            f"finish_many of {BATCH}": _timed(
                max(1, calls // 10),
                accept_batch,
                lambda i: j.finish_many([(f"b{i}.{k}", Outcome.ok(), True) for k in range(BATCH)]),
            ),
        }
        j.close()
        return out
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def figures(took: list[float]) -> dict[str, float]:
    return {
        "per_s": round(len(took) / sum(took)),
        "p50_ms": round(pct(took, 50) * 1e3, 3),
        "p99_ms": round(pct(took, 99) * 1e3, 3),
    }


def run(where: Path | None = None, calls: int = 400, rounds: int = 3) -> dict[str, Any]:
    where = where or ROOT / "build"
    where.mkdir(parents=True, exist_ok=True)
    per_round: dict[str, list[dict[str, list[float]]]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            per_round[mode].append(one_round(where, mode, calls))
    ops: dict[str, Any] = {}
    for op in per_round["NORMAL"][0]:
        row: dict[str, Any] = {}
        for mode in MODES:
            rates = [len(r[op]) / sum(r[op]) for r in per_round[mode]]
            pooled = [t for r in per_round[mode] for t in r[op]]
            row[mode] = {**figures(pooled), "per_s": round(statistics.median(rates))}
        row["full_time_ratio"] = round(row["NORMAL"]["per_s"] / row["FULL"]["per_s"], 1)
        row["full_extra_ms"] = round(1e3 / row["FULL"]["per_s"] - 1e3 / row["NORMAL"]["per_s"], 3)
        ops[op] = row
    return {"calls": calls, "rounds": rounds, "batch": BATCH, "dir": str(where), "ops": ops}


def markdown(r: dict[str, Any]) -> list[str]:
    rows = [
        f"| {op} | {v['NORMAL']['per_s']:,} | {v['NORMAL']['p50_ms']} / {v['NORMAL']['p99_ms']} "
        f"| {v['FULL']['per_s']:,} | {v['FULL']['p50_ms']} / {v['FULL']['p99_ms']} "
        f"| {v['full_time_ratio']} | {v['full_extra_ms']} |"
        for op, v in r["ops"].items()
    ]
    return [
        BEGIN,
        "## The journal: `synchronous=NORMAL` and `FULL`",
        "",
        f"`bench/journal_sync.py` on {machine()}, journals on the checkout's disk: each "
        f"write the host makes, {r['calls']} calls one at a time ({r['calls'] // 10} for the "
        f"batches of {r['batch']} ends), on a fresh WAL journal opened at each level, "
        f"{r['rounds']} alternating rounds (calls/s: the median round; latency over all).",
        "",
        "| write | NORMAL calls/s | NORMAL p50 / p99 (ms) | FULL calls/s | FULL p50 / p99 (ms) "
        "| time ratio | FULL adds (ms a call) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "The host makes notes and starts at `FULL` (they guard side effects: what a job "
        "has done outside, that it may have begun) and acceptances and finishes at "
        '`NORMAL` (see docs/operations.md, "The journal and a power loss").',
        END,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="where to make the journals")
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    result_option(ap)
    args = ap.parse_args()
    result = run(args.dir, args.calls, args.rounds)
    report(result, markdown(result)[5:-3], args.json)


if __name__ == "__main__":
    sys.exit(main())
