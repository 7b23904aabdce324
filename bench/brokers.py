"""The host's main figures on ActiveMQ Classic and on Artemis, in one run, each beside its
baseline measured on the same broker in the same run.

    python bench/brokers.py              # both brokers, short runs (the machine is shared)
    python bench/brokers.py --render     # rewrite the sections from build/brokers.json

On each broker, in a process of its own (``OPSAGENT_BENCH_BROKER``): the health_ping round
trip (bench/ping.py: raw responder baselines, the host idle and saturated), throughput
(bench/throughput.py: the raw consume-and-ack loop and the raw loop with the contract's
wire work as baselines; fewer requests and rounds than `make bench`), the hot standby's
takeover (bench/standby.py) and the chaos soak (bench/chaos_soak.py, on a persistent broker
of the same kind).  Writes the ``brokers`` section of docs/performance.md and of
docs/reliability.md (bench/reliability.py keeps it when it rewrites that page).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import ROOT, machine  # noqa: E402

BENCH = Path(__file__).parent
SAVED = ROOT / "build" / "brokers.json"
NAMES = {"classic": "ActiveMQ Classic 5.17", "artemis": "ActiveMQ Artemis 2.40"}
#: Short runs: a 2-core machine shared with other work.
CALLS = {
    "ping": "ping.run()",
    "throughput": "throughput.run(5000, 1)",
    "standby": "standby.standby(600, kill_at=0.3, timeout=300)",
    "soak": "chaos_soak.soak(1000, 1, 1, port={port}, timeout=600, broker_kind={kind!r})",
}
SOAK_PORT = {"classic": 61653, "artemis": 61753}


def measure(kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, call in CALLS.items():
        call = call.format(port=SOAK_PORT[kind], kind=kind)
        module = call.split(".")[0]
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "r.json"
            code = (f"import json, {module}; r = {call}; r.pop('samples_ms', None); "
                    f"open({str(result)!r}, 'w').write(json.dumps(r))")
            subprocess.run([sys.executable, "-c", code], cwd=BENCH, check=True,
                           env={**os.environ, "OPSAGENT_BENCH_BROKER": kind})
            out[name] = json.loads(result.read_text())
        print(kind, name, json.dumps({k: v for k, v in out[name].items()
                                      if k not in ("machine", "faults")}), flush=True)
    return out


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def performance_section(r: dict[str, Any]) -> str:
    kinds = [k for k in NAMES if k in r["brokers"]]
    head = _row("", *(NAMES[k] for k in kinds))
    sep = _row("---", *("---:" for _ in kinds))

    def ping(case: str, field: str) -> list[str]:
        return [str(r["brokers"][k]["ping"][case][field]) for k in kinds]

    def tp(field: str) -> list[str]:
        return [str(r["brokers"][k]["throughput"][field]) for k in kinds]

    lines = [
        "<!-- brokers:begin -->",
        "## On both brokers",
        "",
        f"Measured by `bench/brokers.py` on {r['date']} on {r['machine']}, against the local "
        "ActiveMQ Classic and Artemis started by `scripts/services.sh`, one after the other "
        "in the same run; every figure beside its baseline measured on the same broker in "
        "the same run. Short runs (the machine's 2 cores were shared with other work, load "
        f"average {r['load']:.1f} at the end): throughput over "
        f"{r['brokers'][kinds[0]]['throughput']['requests']:,} requests and one round, not "
        "`make bench`'s 20,000 and three; the sections above are `make bench`'s, on "
        "Classic.",
        "",
        "### health_ping round trip (ms)",
        "",
        head, sep,
        _row("baseline: raw stomp.py responder, TCP_NODELAY, p50",
             *ping("baseline_raw_nodelay", "p50_ms")),
        _row("baseline: raw stomp.py responder, TCP_NODELAY, p99",
             *ping("baseline_raw_nodelay", "p99_ms")),
        _row("opsagent idle, p50", *ping("opsagent_idle", "p50_ms")),
        _row("opsagent idle, p99", *ping("opsagent_idle", "p99_ms")),
        _row("opsagent, every worker busy, 1,000 jobs queued, p50",
             *ping("opsagent_saturated", "p50_ms")),
        _row("opsagent, every worker busy, 1,000 jobs queued, p99",
             *ping("opsagent_saturated", "p99_ms")),
        "",
        "### Throughput, no-op `thread` capability (requests/s)",
        "",
        head, sep,
        _row("baseline: raw consume-and-ack loop", *tp("raw_consume_ack_per_s")),
        _row("baseline: raw consume, parse, publish an event, ack",
             *tp("raw_consume_event_ack_per_s")),
        _row("opsagent", *tp("opsagent_per_s")),
        _row("opsagent's ratio to the raw loop", *tp("ratio")),
        _row("opsagent's ratio to the raw loop with events", *tp("ratio_to_raw_with_events")),
        _row("broker CPU per request in the host's run (us)",
             *(str(r["brokers"][k]["throughput"]["cpu_us_per_request"]["host"]["broker"])
               for k in kinds)),
        "",
        "The raw loops ask each broker for 2,000 unacknowledged messages as the host does "
        "(Classic `activemq.prefetchSize: 2000`; Artemis `consumer-window-size`: 2,000 x 512 "
        "bytes).",
        "<!-- brokers:end -->",
    ]
    return "\n".join(lines)


def reliability_section(r: dict[str, Any]) -> str:
    kinds = [k for k in NAMES if k in r["brokers"]]
    head = _row("", *(NAMES[k] for k in kinds), "baseline (target)")
    sep = _row("---", *("---:" for _ in kinds), "---:")

    def sb(field: str) -> list[str]:
        return [str(r["brokers"][k]["standby"][field]) for k in kinds]

    def so(field: str) -> list[str]:
        return [str(r["brokers"][k]["soak"][field]) for k in kinds]

    def faults(kind: str) -> str:
        return ", ".join(f"{f['kind']} {f['resume_s']} s"
                         for f in r["brokers"][kind]["soak"]["faults"])

    def restart(kind: str, field: str) -> str:
        return ", ".join(str(f[field]) for f in r["brokers"][kind]["soak"]["faults"]
                         if f["kind"] == "broker")

    s0 = r["brokers"][kinds[0]]
    lines = [
        "<!-- brokers:begin -->",
        "## On both brokers",
        "",
        f"Measured by `bench/brokers.py` on {r['date']} on {r['machine']}: the same "
        "measurements on ActiveMQ Classic and on Artemis, one after the other in the same "
        "run, shorter than the sections above (a shared 2-core machine): a "
        f"{s0['soak']['requests']:,}-request soak with one broker restart and one host "
        f"SIGKILL, a {s0['standby']['sent']:,}-request standby run. `make soak "
        "BROKER=artemis` runs the full soak on Artemis.",
        "",
        "### Hot standby (exclusive queue), the active host SIGKILLed at 30 %",
        "",
        head, sep,
        _row("takeover: kill to the standby's first event (s)", *sb("takeover_s"), "< 10"),
        _row("requests lost", *sb("lost"), "0"),
        _row("ran twice", *sb("ran_twice"), "0"),
        _row("finished by the standby", *sb("finished_by_standby"), ""),
        _row("standby's deliveries before the kill",
             *(str(min(r["brokers"][k]["standby"]["journal_rows_at_kill"].values()))
               for k in kinds), "0 (exclusive)"),
        "",
        "### Chaos soak",
        "",
        head, sep,
        _row("requests sent", *so("sent"), f"{s0['soak']['requests']:,}"),
        _row("with exactly one terminal outcome", *so("exactly_one_terminal_outcome"),
             "all"),
        _row("lost", *so("lost"), "0"),
        _row("side effect more than once", *so("side_effect_more_than_once"), "0"),
        _row("reconciled (seen)", *so("reconciled_seen"), ""),
        _row("processes left behind", *so("processes_left_behind"), "0"),
        _row("resumed after each fault (fault: first event after it)",
             *(faults(k) for k in kinds), ""),
        _row("broker restart: stopped and started again (s)",
             *(restart(k, "broker_down_s") for k in kinds), ""),
        _row("broker restart: first event after the broker was up (s)",
             *(restart(k, "resume_after_broker_up_s") for k in kinds), ""),
        _row("elapsed (s)", *so("elapsed_s"), ""),
        "",
        "Artemis takes longer to stop and start (most of it its JVM's start); the host "
        "resumes about a second after either broker is back (its reconnection "
        "backoff is capped at 1 s in these runs, 30 s by default).",
        *make_soak_lines(),
        "<!-- brokers:end -->",
    ]
    return "\n".join(lines)


def make_soak_lines(path: Path = ROOT / "build" / "soak-artemis.json") -> list[str]:
    """The last `make soak BROKER=artemis` report, when there is one."""
    if not path.exists():
        return []
    s = json.loads(path.read_text())
    faults = ", ".join(
        f"{f['kind']} {f['resume_s']} s" + (f" (down {f['broker_down_s']} s)"
                                            if f["kind"] == "broker" else "")
        for f in s["faults"])
    return [
        "",
        f"The last `make soak BROKER=artemis` (`bench/chaos_soak.py --broker artemis`, "
        f"seed {s['seed']}): {s['requests']:,} requests, {s['broker_restarts']} broker "
        f"restarts and {s['host_kills']} host SIGKILLs in {s['elapsed_s']} s: "
        f"{s['exactly_one_terminal_outcome']:,} with exactly one terminal outcome, "
        f"{s['lost']} lost, {s['side_effect_more_than_once']} side effects more than once, "
        f"{s['reconciled_seen']} reconciled, {s['processes_left_behind']} processes left "
        f"behind; resumed after each fault: {faults}. On this loaded machine a restart of "
        "Artemis is slow: a start alone took 11-15 s at a load average of ~13 (~6 s on a "
        "quiet machine), a stop ~2 s with a client connected; the rest of the time down was "
        "not broken down.",
    ]


def write(r: dict[str, Any]) -> None:
    from run_all import write_section

    write_section(ROOT / "docs" / "performance.md", "brokers", performance_section(r))
    write_section(ROOT / "docs" / "reliability.md", "brokers", reliability_section(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker", choices=("classic", "artemis", "both"), default="both")
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    if args.render:
        write(json.loads(SAVED.read_text()))
        return
    kinds = list(NAMES) if args.broker == "both" else [args.broker]
    r = {"date": str(datetime.date.today()), "machine": machine(),
         "brokers": {k: measure(k) for k in kinds}, "load": os.getloadavg()[0]}
    SAVED.parent.mkdir(exist_ok=True)
    SAVED.write_text(json.dumps(r, indent=2) + "\n")
    write(r)


if __name__ == "__main__":
    main()
