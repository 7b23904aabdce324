"""Hot standby: two hosts on one queue with ``[broker] exclusive = true``; the active one is
SIGKILLed mid-load and the standby takes over.

    python bench/standby.py --requests 3000

Both hosts share the cache (as two machines share $SWF_TMP_DIR) and each has its own
journal.  A request the killed host had received and not acknowledged reaches the standby
marked redelivered, with no record in the standby's journal: it may have run part way,
and ``test_side_effect`` declares ``reconcile``, which finds its effect in the shared
cache.  Reports what was lost, what ran twice, how many were reconciled and the takeover
time (from the kill to the first job event published by the standby).  Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from chaos import ChaosCaller, alive, descendants, done_count, journal_rows, run_counts
from common import HostProcess, broker, machine


def standby(requests: int, *, kill_at: float = 0.3, work: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 600.0) -> dict[str, Any]:
    conn = env or broker()
    tmp = Path(work or tempfile.mkdtemp(prefix="opsagent-standby-"))
    # exclusive.*: the test Artemis makes these queues exclusive (Classic: the SUBSCRIBE).
    queue = f"/queue/exclusive.standby.{uuid.uuid4().hex[:10]}"
    topic = f"/topic/standby.{uuid.uuid4().hex[:10]}"
    cache = tmp / "cache"
    hosts = [HostProcess(tmp / name, conn, name=name, queue=queue, topic=topic,
                         extra={"broker": {"exclusive": True},
                                "host": {"cache_dir": str(cache)}})
             for name in ("first", "second")]
    caller = ChaosCaller(conn, queue, topic)
    pids: set[int] = set()
    try:
        for h in hosts:
            h.start()
        caller.connect()
        sent: list[str] = []

        def send_all() -> None:
            for i in range(requests):
                rid = f"sb-{i}"
                caller.send({"msg_type": "test_side_effect", "namespace": "prodops",
                             "request_id": rid, "n": str(i)})
                sent.append(rid)

        sender = threading.Thread(target=send_all, name="sender", daemon=True)
        sender.start()
        end = time.monotonic() + timeout
        while done_count(cache) < kill_at * requests and time.monotonic() < end:
            time.sleep(0.02)
        rows = [journal_rows(h.tmp / "state") for h in hosts]
        active, spare = (0, 1) if len(rows[0]) >= len(rows[1]) else (1, 0)
        before_kill = {h.config.stem: len(r) for h, r in zip(hosts, rows, strict=True)}
        victim = hosts[active]
        assert victim.proc is not None
        pids |= descendants(victim.proc.pid)
        killed_at = time.monotonic()
        victim.signal(signal.SIGKILL)
        victim.wait()
        takeover = None
        name = hosts[spare].config.stem
        while takeover is None and time.monotonic() < end:
            with caller.cond:
                for at, e in caller.events:
                    if at >= killed_at and e.get("sender") == name and "outcome" in e:
                        takeover = at - killed_at
                        break
                else:
                    caller.cond.wait(0.2)
        sender.join(timeout)
        while time.monotonic() < end:
            merged = {**journal_rows(hosts[active].tmp / "state"),
                      **journal_rows(hosts[spare].tmp / "state")}
            done = {r for r, (state, published, _) in merged.items()
                    if state == "finished" and published}
            if all(r in done for r in sent):
                break
            time.sleep(0.3)
        first = journal_rows(hosts[active].tmp / "state")
        second = journal_rows(hosts[spare].tmp / "state")
        runs = run_counts(cache)
        twice = sorted(r for r in sent if runs.get(r[3:], 0) > 1)
        # The window: a request delivered to the killed host and not yet acknowledged
        # (running, or finished while its ack had not reached the broker) is redelivered to
        # the standby, whose journal has not seen it: reconciled there, never run again.
        window = [r for r in sent if first.get(r, ("",))[0] in ("running", "finished")
                  and second.get(r, ("",))[0] == "finished"]
        with caller.cond:
            reconciled = {e["job_id"] for _, e in caller.events
                          if e.get("reconciled") and e.get("sender") == name}
        effects = cache / "side-effects"
        lost = [r for r in sent if not (effects / f"{r[3:]}.done").exists()
                or (first.get(r, ("",))[0] != "finished" and second.get(r, ("",))[0]
                    != "finished")]
        return {
            "requests": requests,
            "sent": len(sent),
            "journal_rows_at_kill": before_kill,
            "killed": victim.config.stem,
            "takeover_s": None if takeover is None else round(takeover, 3),
            "finished_by_killed_host": sum(1 for v in first.values() if v[0] == "finished"),
            "finished_by_standby": sum(1 for v in second.values() if v[0] == "finished"),
            "lost": len(lost),
            "ran_twice": len(twice),
            "ran_twice_ids": twice[:20],
            "redelivered_to_standby_after_running_or_finishing_on_killed_host": len(window),
            "reconciled_by_standby": len(reconciled),
            "processes_left_behind": len(alive(pids)),
            "machine": machine(),
        }
    finally:
        caller.close()
        for h in hosts:
            h.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = standby(args.requests)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(1 if report["lost"] or report["ran_twice"] else 0)


if __name__ == "__main__":
    main()
