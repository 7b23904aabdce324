"""Every reliability measurement, written to docs/reliability.md (and build/reliability.json).

    python bench/reliability.py                      # 10,000-request soak, 5 + 3 faults
    python bench/reliability.py --quick              # 1,000 requests, 1 + 1 faults, smaller
    python bench/reliability.py --soak-from build/soak-classic.json   # reuse a `make soak` run
    python bench/reliability.py --only catalogue     # re-measure one part, keep the rest
    python bench/reliability.py --render             # rewrite the page from the last JSON

The figures in docs/reliability.md come from this script; edit the script, not the page.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import resources
from chaos_soak import soak
from common import ROOT, broker, machine
from standby import standby

PAGE = ROOT / "docs" / "reliability.md"


def write_page(text: str) -> None:
    """The page as rendered, keeping the section bench/brokers.py writes (both brokers)."""
    old = PAGE.read_text() if PAGE.exists() else ""
    kept = re.search(r"<!-- brokers:begin -->.*?<!-- brokers:end -->", old, re.S)
    PAGE.write_text(text + "\n" + (f"\n{kept.group(0)}\n" if kept else ""))


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render(r: dict[str, Any]) -> str:
    s, sb, fl, fc, mon = r["soak"], r["standby"], r["flood"], r["full_cache"], r["monitor"]
    out = [
        "# Reliability",
        "",
        "<!-- Written by bench/reliability.py; run `make reliability` or `make bench` (the "
        "soak alone: `make soak`). Do not edit by hand. -->",
        "",
        f"Measured on {r['machine']}, against the local ActiveMQ 5.17 (Debian package; the "
        "soak on a persistent broker of its own). The baseline of each figure is the target "
        "the project sets or the same measurement without the fault.",
        "",
        "## Chaos soak",
        "",
        f"{s['requests']:,} `test_side_effect` requests (a file written whole by a rename, "
        "then a line per time that happened in a counter file; process isolation, two at a "
        "time; it declares `reconcile`, which looks for the file) while the broker "
        f"(persistent) was restarted {s['broker_restarts']} times and the host was SIGKILLed "
        f"and restarted {s['host_kills']} times, at random moments (seed {s['seed']}; the "
        "sender keeps at most 2 % of the requests, 50 or more, ahead of a fault until it is "
        "over, so that work is in flight when it strikes and left after it): "
        f"`bench/chaos_soak.py`, {s['elapsed_s']} s in all.",
        "",
        _row("", "measured", "baseline (target)"),
        _row("---", "---:", "---:"),
        _row("requests sent (broker receipt)", f"{s['sent']:,}", f"{s['requests']:,}"),
        _row("with exactly one terminal outcome (journal: finished, published)",
             f"{s['exactly_one_terminal_outcome']:,}", f"{s['requests']:,} (all)"),
        _row("side effect happened more than once", s["side_effect_more_than_once"],
             "0 (none)"),
        _row("delivered more than once (broker restarts, host kills)",
             f"{s['interrupted_attempts']:,}", "-"),
        _row("... ended by `reconcile` (the effect was there; a caller saw the event)",
             s["reconciled_seen"], "-"),
        _row("lost", s["lost"], "0 (none)"),
        _row("processes left behind", s["processes_left_behind"], "0 (none)"),
        _row("requests sent again by the caller (no receipt)", s["resends_by_caller"], "-"),
        _row("terminal events seen by a caller on the topic", f"{s['events_seen_on_topic']:,}",
             f"{s['requests']:,}"),
        "",
        "Events published while the caller was cut off by a broker restart are not seen by "
        "it (the topic is not durable); the journal is the record. A job running when the "
        "host was killed is redelivered (at least once); the restarted host first kills what "
        "the job left running, then, since the journal says it had started, hands it to the "
        "capability's `reconcile`, which ends it when its effect is already there instead of "
        "running it a second time (docs/concepts.md).",
        "",
        "Resume after each fault (from the fault to the next terminal event a caller "
        "receives; for a broker restart also from the moment the broker accepted "
        "connections again):",
        "",
        _row("#", "fault", "at (requests done)", "broker down s", "resume s",
             "resume after broker up s", "survivors of the kill"),
        _row("---", "---", "---:", "---:", "---:", "---:", "---:"),
    ]
    for i, f in enumerate(s["faults"], 1):
        out.append(_row(i, "broker restart" if f["kind"] == "broker" else "host SIGKILL",
                        f"{f['at_done']:,}", f.get("broker_down_s", "-"), f["resume_s"],
                        f.get("resume_after_broker_up_s", "-"),
                        f.get("survivors_after_kill", "-")))
    out += [
        "",
        f"Baseline: a fault-free start of the host to its first subscription takes "
        f"{r['host_start_s']} s.",
        "",
        "## Hot standby",
        "",
        f"Two hosts on one queue with `[broker] exclusive = true`, sharing the cache; "
        f"{sb['requests']:,} requests; the active host SIGKILLed after 30 % were done "
        "(`bench/standby.py`).",
        "",
        _row("", "measured", "baseline (target)"),
        _row("---", "---:", "---:"),
        # The active host holds at most its prefetch (2,000) unfinished; the broker keeps
        # the rest, so "all" is not the baseline for the active one: the standby's 0 is.
        _row("journal rows at the kill (active, standby)",
             ", ".join(str(v) for v in sb["journal_rows_at_kill"].values()),
             "what was delivered, 0"),
        _row("takeover (kill to the standby's first event), s", sb["takeover_s"], "-"),
        _row("finished by the killed host / by the standby",
             f"{sb['finished_by_killed_host']:,} / {sb['finished_by_standby']:,}", "-"),
        _row("lost", sb["lost"], "0"),
        _row("ran twice", sb["ran_twice"], "0"),
        _row("started or finished on the killed host, not acknowledged, finished by the "
             "standby", sb["redelivered_to_standby_after_running_or_finishing_on_killed_host"],
             "-"),
        _row("... ended by the standby's `reconcile` (the effect was there)",
             sb["reconciled_by_standby"], "-"),
        _row("processes left behind", sb["processes_left_behind"], "0"),
        "",
        "Each host has its own journal: a job the killed host had started, or finished and "
        "published without its acknowledgement reaching the broker, comes to the standby "
        "marked redelivered with no record there. The standby treats it as possibly "
        "interrupted and reconciles it first, so it does not run again.",
        "",
        "## Resource faults",
        "",
        f"A job printing {fl['printed_mib']:,} MiB to standard output (`test_flood`), "
        "pinged all the while (`bench/resources.py`):",
        "",
        _row("", "measured", "baseline"),
        _row("---", "---:", "---:"),
        _row("outcome", fl["outcome"], "ok"),
        _row("host RSS, MiB (max during / before)", fl["rss_max_mib"], fl["rss_before_mib"]),
        _row("host log after the job, bytes", f"{fl['log_bytes']:,}", "-"),
        _row("ping p50 during / idle, ms", fl["ping_during_p50_ms"], fl["ping_idle_p50_ms"]),
        _row("ping max during / idle, ms", fl["ping_during_max_ms"], fl["ping_idle_max_ms"]),
        _row("job time, s", fl["seconds"], "-"),
        "",
        f"The cache on a {fc['tmpfs_mib']} MiB tmpfs, a job writing {fc['asked_mib']} MiB "
        "into it (`test_fill`):",
        "",
        _row("", "measured", "baseline (target)"),
        _row("---", "---:", "---:"),
        _row("outcome / event", f"{fc['outcome']} / `{fc['event']}`", "error"),
        _row("reason", fc["reason"], "-"),
        _row("host alive", fc["host_alive"], "True"),
        _row("ping max after, ms", fc["ping_after_max_ms"], fc["ping_before_ms"]),
        _row("next job that fits", fc["next_job_outcome"], "ok"),
        "",
        *full_state_section(r.get("full_state")),
        "The monitor answering 503 or never answering (posts time out after 2 s), a job and "
        "a ping in turn:",
        "",
        _row("monitor", "ping p50 ms", "ping p99 ms", "ping max ms", "posts made"),
        _row("---", "---:", "---:", "---:", "---:"),
    ]
    for mode, label in (("none", "none (baseline)"), ("503", "503"), ("hang", "hangs")):
        m = mon[mode]
        out.append(_row(label, m["ping_p50_ms"], m["ping_p99_ms"], m["ping_max_ms"],
                        m["monitor_posts"]))
    if "catalogue" in r:
        out += catalogue_section(r["catalogue"])
    out += ["", "## Hostile input", "",
            "`tests/system/test_hostile.py` sends every class of hostile body (invalid UTF-8, "
            "truncated JSON, non-objects, a 10,000-digit integer, 100,000-deep nesting, NaN, "
            "duplicate keys, wrong types, a body over the cap, an unknown `msg_type`, foreign "
            "and missing `namespace`, full-width digits, and path and shell injection in the "
            "routing fields and every pattern-checked field of the bundled capabilities) "
            "through a host on the broker, checks one structured rejection each, that the "
            "host keeps consuming and that nothing is written outside its cache and state; "
            "a Hypothesis property drives the whole envelope and dispatch path, and atheris "
            "fuzzes the envelope parser for 20 s. These are pass/fail tests, run by "
            "`make test`.", ""]
    return "\n".join(out)


def full_state_section(fs: dict[str, Any] | None) -> list[str]:
    if fs is None:
        return []
    return [
        f"The state directory (the journal) on a {fs['tmpfs_mib']} MiB tmpfs, filled, and "
        f"{fs['requests']} requests sent; then the space freed (`resources.full_state`):",
        "",
        _row("", "measured", "baseline (target)"),
        _row("---", "---:", "---:"),
        _row("outcomes while full", " / ".join(fs["outcomes"]), "error"),
        _row("reason", fs["reason"], "-"),
        _row("host alive", fs["host_alive"], "True"),
        _row("ping max while full, ms", fs["ping_during_max_ms"], fs["ping_before_ms"]),
        _row("kept ends recorded and acknowledged after freeing, s",
             fs["recorded_after_freeing_s"], "-"),
        _row("next job", fs["next_job_outcome"], "ok"),
        _row("messages a second host found left on the queue", fs["left_on_queue"], "0"),
        "",
    ]


def catalogue_section(c: dict[str, Any]) -> list[str]:
    st = c["settings"]
    out = [
        "",
        "The catalogue answering 503 or never answering while `rucio_snapshot_update` asks "
        "it for the campaigns (the first thing the job does when the request names none), "
        f"with `catalogue_timeout = {st['catalogue_timeout']:g}`, `catalogue_tries = "
        f"{st['catalogue_tries']}`, `catalogue_backoff = {st['catalogue_backoff']:g}`: one "
        f"call is bounded by {c['bound_s']:g} s (tries × timeout + the waits between tries). "
        "Pings go on a connection of their own, all the while; the baseline is the same job "
        "against a catalogue that answers at once (no campaign is current, so the job ends "
        "there), and the same host with no job at all.",
        "",
        _row("catalogue", "jobs", "tries per job", "job s (mean / max)", "bound s",
             "ping p50 ms", "ping p99 ms", "ping max ms", "pings", "host alive"),
        _row("---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---"),
    ]
    idle = c.get("idle")
    if idle:
        out.append(_row("no job (baseline)", "-", "-", "-", "-", idle["ping_p50_ms"],
                        idle["ping_p99_ms"], idle["ping_max_ms"], idle["pings"], "True"))
    for mode, label in (("none", "answers at once (baseline)"), ("503", "503"),
                        ("hang", "hangs")):
        m = c[mode]
        out.append(_row(label, m["jobs"], ", ".join(map(str, m["tries_per_job"])),
                        f"{m['job_mean_s']} / {m['job_max_s']}",
                        "-" if mode == "none" else c["bound_s"], m["ping_p50_ms"],
                        m["ping_p99_ms"], m["ping_max_ms"], m["pings"], m["host_alive"]))
    out += ["", "The job runs in its own process. A ping that arrives right behind the "
            "request of a process-isolated job waits until that job has been started (an "
            "open item in the CHANGELOG): with a job every tenth of a second most pings of "
            "the second baseline land there, and in the fault cases the ping right after "
            "each job request does, hence their maxima. Between job starts the catalogue's "
            "faults cost pings nothing.", "",
            "The job's outcome, as its `rucio_snapshot_ready` event says it "
            "(`ok: false` each time):", ""]
    for mode in ("503", "hang"):
        for error in c[mode]["errors"]:
            out.append(f"- {'503' if mode == '503' else 'hangs'}: `{error}`")
    return out


def host_start(env: dict[str, str]) -> float:
    import tempfile
    import time

    from common import HostProcess

    with tempfile.TemporaryDirectory() as tmp:
        host = HostProcess(Path(tmp), env)
        t = time.monotonic()
        host.start()
        took = time.monotonic() - t
        host.stop()
    return round(took, 2)


PARTS = ("soak", "standby", "flood", "full_cache", "full_state", "monitor", "catalogue")
#: ``--quick``: the same measurements, smaller (minutes instead of most of an hour).
QUICK = {"requests": 1000, "broker_restarts": 1, "host_kills": 1, "standby_requests": 500,
         "flood_mb": 256}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--broker-restarts", type=int, default=5)
    ap.add_argument("--host-kills", type=int, default=3)
    ap.add_argument("--standby-requests", type=int, default=3000)
    ap.add_argument("--flood-mb", type=int, default=1024)
    ap.add_argument("--quick", action="store_true",
                    help="a shorter pass: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    ap.add_argument("--soak-from", type=Path, help="a JSON report of bench/chaos_soak.py")
    ap.add_argument("--only", type=lambda v: v.split(","), metavar="PART[,PART]",
                    help=f"measure only these ({', '.join(PARTS)}); the others come from "
                    "the last build/reliability.json")
    ap.add_argument("--render", action="store_true",
                    help="measure nothing: write the page again from build/reliability.json")
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    parts = args.only or list(PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--only: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    saved = ROOT / "build" / "reliability.json"
    if args.render:
        write_page(render(json.loads(saved.read_text())))
        print(f"wrote {PAGE} from {saved}")
        return
    report: dict[str, Any] = {}
    if args.only:
        if not saved.exists():
            ap.error(f"--only needs a previous full run's {saved}")
        report = json.loads(saved.read_text())
    env = broker()
    report["machine"] = machine()
    if "soak" in parts:
        if args.soak_from:
            report["soak"] = json.loads(args.soak_from.read_text())
        else:
            report["soak"] = soak(args.requests, args.broker_restarts, args.host_kills)
        report["host_start_s"] = host_start(env)
    measure = {"standby": lambda: standby(args.standby_requests, env=env),
               "flood": lambda: resources.flood(env, args.flood_mb),
               "full_cache": lambda: resources.full_cache(env),
               "full_state": lambda: resources.full_state(env),
               "monitor": lambda: resources.monitor(env),
               "catalogue": lambda: resources.catalogue(env)}
    for part, run in measure.items():
        if part in parts:
            report[part] = run()
            print(part, "measured", flush=True)
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps(report, indent=2) + "\n")
    write_page(render(report))
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
