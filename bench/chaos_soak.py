"""Chaos soak: requests with a side effect while the broker restarts and the host is killed.

    python bench/chaos_soak.py --requests 10000 --broker-restarts 5 --host-kills 3

A persistent broker of its own (``--broker classic``: ActiveMQ Classic on port 61633;
``--broker artemis``: Artemis on 61733; or --port) and one host running
``test_side_effect`` (a file written whole by a rename -- the effect -- and a line per time
it took place in a counter file; it declares ``reconcile``, which finds the file).
Faults come at random moments (random fractions of the work done), one after another:
``broker`` is a stop and start of ActiveMQ, ``host`` a SIGKILL of the host and a restart
on the same state and cache.  The record of what happened is the host's journal (one row
per request id), the side-effect files, and the events seen on the topic.  Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from chaos import (
    ChaosCaller,
    PersistentBroker,
    alive,
    descendants,
    done_count,
    journal_rows,
    run_counts,
)
from common import HostProcess, machine


def soak(requests: int, broker_restarts: int, host_kills: int, *, port: int = 61633,
         seed: int | None = None, work: Path | None = None,
         timeout: float = 1800.0, broker_kind: str = "classic") -> dict[str, Any]:
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    tmp = Path(work or tempfile.mkdtemp(prefix="opsagent-soak-"))
    broker = PersistentBroker(tmp / "svc", port, broker_kind)
    broker.start()
    host = HostProcess(tmp / "host", broker.connection, name="soak")
    cache, state = host.tmp / "cache", host.tmp / "state"
    seen_pids: set[int] = set()
    faults: list[dict[str, Any]] = []
    caller = ChaosCaller(broker.connection, host.queue, host.topic)
    kinds = ["broker"] * broker_restarts + ["host"] * host_kills
    rng.shuffle(kinds)
    at = sorted(rng.uniform(0.05, 0.85) * requests for _ in kinds)
    # The sender runs ahead of each fault's moment by this many requests, then waits
    # for the fault to be over: there is work in flight when it strikes and work left
    # after it (a fast host could otherwise finish everything sent while the broker is
    # being stopped, and nothing would show that it resumed).
    margin = max(50, requests // 50)
    over = [threading.Event() for _ in kinds]
    t0 = time.monotonic()
    try:
        host.start()
        caller.connect()
        sent: list[str] = []
        sender_error: list[BaseException] = []

        def send_all() -> None:
            try:
                gate = 0
                for i in range(requests):
                    while gate < len(at) and i >= at[gate] + margin:
                        over[gate].wait()
                        gate += 1
                    rid = f"soak-{i}"
                    caller.send({"msg_type": "test_side_effect", "namespace": "prodops",
                                 "request_id": rid, "n": str(i)})
                    sent.append(rid)
            except BaseException as exc:  # noqa: BLE001 - reported below
                sender_error.append(exc)

        sender = threading.Thread(target=send_all, name="sender", daemon=True)
        sender.start()
        for number, (kind, threshold) in enumerate(zip(kinds, at, strict=True)):
            while done_count(cache) < threshold:
                if host.proc is not None and host.proc.poll() is not None:
                    raise RuntimeError(f"host exited by itself:\n{host.text()[-3000:]}")
                time.sleep(0.05)
            assert host.proc is not None
            seen_pids |= descendants(host.proc.pid)
            fault: dict[str, Any] = {"kind": kind, "at_done": done_count(cache),
                                     "at_s": round(time.monotonic() - t0, 2)}
            # Resume is timed from when the fault is complete (the broker is gone and back;
            # the host is dead): events already on their way must not count.
            hit = time.monotonic()
            if kind == "broker":
                broker.stop()
                broker.start()
                up = time.monotonic()
                over[number].set()
                fault["broker_down_s"] = round(up - hit, 2)
                resume = caller.first_event_after(up, timeout=120)
                if resume is not None:
                    fault["resume_after_broker_up_s"] = round(resume, 2)
                    resume += up - hit
            else:
                host.signal(signal.SIGKILL)
                host.wait()
                dead = time.monotonic()
                host.start(wait=False)
                over[number].set()
                resume = caller.first_event_after(dead, timeout=120)
                time.sleep(0.5)
                fault["survivors_after_kill"] = len(alive(seen_pids))
            fault["resume_s"] = None if resume is None else round(resume, 2)
            faults.append(fault)
        sender.join(timeout)
        if sender_error:
            raise RuntimeError(f"sender failed: {sender_error[0]!r}")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rows = journal_rows(state)
            if all(rows.get(r, ("", 0, 0))[:2] == ("finished", 1) for r in sent):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        assert host.proc is not None
        seen_pids |= descendants(host.proc.pid)
        host.stop()
        time.sleep(2)
        left = alive(seen_pids)
        rows = journal_rows(state)
        runs = run_counts(cache)
        observed: dict[str, int] = {}
        reconciled: set[str] = set()
        for e in caller.events_since(0):
            if "outcome" in e and e.get("request") == "test_side_effect":
                observed[e["job_id"]] = observed.get(e["job_id"], 0) + 1
                if e.get("reconciled"):
                    reconciled.add(e["job_id"])
        one_outcome = [r for r in sent if rows.get(r, ("", 0, 0))[:2] == ("finished", 1)]
        ok = {r for r in sent if (cache / "side-effects" / f"{r[5:]}.done").exists()}
        more_than_once = sorted((r for r in sent if runs.get(r[5:], 0) > 1),
                                key=lambda r: int(r[5:]))
        lost = [r for r in sent if r not in ok or rows.get(r, ("", 0, 0))[0] != "finished"]
        report = {
            "requests": requests,
            "broker": broker_kind,
            "seed": seed,
            "broker_restarts": broker_restarts,
            "host_kills": host_kills,
            "sent": len(sent),
            "resends_by_caller": caller.resends,
            "exactly_one_terminal_outcome": len(one_outcome),
            "side_effect_done": len(ok),
            "side_effect_more_than_once": len(more_than_once),
            "more_than_once_ids": more_than_once[:50],
            "reconciled_seen": len(reconciled),
            "interrupted_attempts": sum(1 for r in sent if rows.get(r, ("", 0, 0))[2] > 1),
            "lost": len(lost),
            "lost_ids": lost[:50],
            "events_seen_on_topic": sum(observed.values()),
            "requests_with_event_seen": len(observed),
            "requests_with_two_events_seen": sum(1 for v in observed.values() if v > 1),
            "processes_left_behind": len(left),
            "faults": faults,
            "elapsed_s": round(elapsed, 1),
            "machine": machine(),
        }
        return report
    finally:
        for gate in over:
            gate.set()  # a sender still waiting goes on (and fails against a closed caller)
        caller.close()
        host.stop()
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--broker-restarts", type=int, default=5)
    ap.add_argument("--host-kills", type=int, default=3)
    ap.add_argument("--broker", choices=("classic", "artemis"), default="classic",
                    help="the broker of its own: ActiveMQ Classic or Artemis")
    ap.add_argument("--port", type=int, help="its STOMP port (default: 61633 for Classic, "
                    "61733 for Artemis)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--out", type=Path, help="also write the JSON report here")
    args = ap.parse_args()
    port = args.port or {"classic": 61633, "artemis": 61733}[args.broker]
    report = soak(args.requests, args.broker_restarts, args.host_kills, port=port,
                  seed=args.seed, broker_kind=args.broker)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    bad = (report["sent"] != report["requests"] or report["lost"]
           or report["exactly_one_terminal_outcome"] != report["sent"]
           or report["processes_left_behind"] or report["side_effect_more_than_once"])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
