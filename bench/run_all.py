"""Run every benchmark and write docs/performance.md, then docs/reliability.md.

This is the one writer of docs/performance.md.  The host's figures go between
``<!-- host:begin -->`` and ``<!-- host:end -->``; the journal's sync levels
(bench/journal_sync.py) and each bundled capability's benchmark run in a process of
their own, hand back their result (``--json``), and their ``markdown()`` of it replaces
their own marked section.  The plots (docs/img/*.png) are drawn from the same run's
measurements by bench/plots.py.  Then bench/reliability.py measures the faults and
writes docs/reliability.md.

    python bench/run_all.py                      # everything (the soak alone takes long)
    python bench/run_all.py --quick-reliability  # the reliability pass shorter (--quick)
    python bench/run_all.py --host-only          # the host section and its plots only
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import plots  # noqa: E402
from common import ROOT, machine  # noqa: E402

BENCH = Path(__file__).parent
#: Lane concurrencies of the throughput plot, and the requests at each.
SWEEP = (1, 2, 4, 8, 16)
SWEEP_REQUESTS = 5000
#: Tarball sizes (MB) of the fetch time plot.
FETCH_SIZES = "10,30,100,200"


def budget_lines(t: dict, steps: dict, floor: float) -> list[str]:
    """The CPU each process spent per request, and what the target leaves the host."""
    cpu = t["cpu_us_per_request"]
    names = {"raw": "raw consume-and-ack loop", "raw_events": "raw loop with the contract's "
             "wire work", "host": "opsagent"}

    def cell(run: str, proc: str) -> str:
        return str(cpu[run].get(proc, "-"))

    lines = [
        f"The contract's wire work alone reaches {floor:.2f} of the consume-and-ack loop on "
        "this broker and client.",
        "",
        "CPU per request, in microseconds, of each process over the same runs (median of "
        "the rounds; read from /proc): the consumer (the raw loop or the host), the broker, "
        "and the watcher counting the events in the measuring process:",
        "",
        "| run | consumer | broker | watcher |",
        "|---|---|---|---|",
        *(f"| {names[r]} | {cell(r, 'consumer')} | {cell(r, 'broker')} | "
          f"{cell(r, 'watcher')} |" for r in ("raw", "raw_events", "host")),
        "",
        f"What the target leaves the host: at 0.8 of the raw loop ({t['target_per_s']:,} "
        f"requests/s) a request may take {1e6 / t['target_per_s']:.1f} us of wall time; "
        f"the broker and the watcher took {cpu['host']['broker'] + cpu['host']['watcher']:.1f}"
        f" us of CPU per request in the host's runs, and one Python process runs on one "
        f"core at a time (the GIL), so on these {t['cpus']} cores the host may spend at most "
        f"**{t['host_budget_us_at_target']} us of CPU per request** "
        f"({t['host_budget_us_without_watcher']} us were the events counted without a "
        "watcher on this machine). The raw loop doing "
        f"only the contract's wire work spends {cpu['raw_events']['consumer']} us; the host "
        f"spends {cpu['host']['consumer']} us.",
        "",
        "Each step of a no-op request alone, in one thread, with the library or host code "
        "that takes it, no broker, threads or sockets (`bench/steps.py`, same run):",
        "",
        "| step | CPU us |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in steps["steps_us"].items()),
        f"| **sum** | **{steps['sum_us']}** |",
        "",
    ]
    if steps["sum_us"] > t["host_budget_us_without_watcher"]:
        lines.append(
            "These steps alone, before stomp.py's receiver loop, any thread hand-off or "
            "system call, come to more than either budget: no host that journals, logs "
            "and publishes each request with these libraries reaches 0.8 of the raw loop "
            "on this machine, in one process or several.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host-only", action="store_true",
                    help="the host's benchmarks and plots only: no plugin benchmarks, no "
                    "reliability pass")
    ap.add_argument("--quick-reliability", action="store_true",
                    help="run bench/reliability.py --quick (a 1,000-request soak, ...)")
    args = ap.parse_args()
    results = {}
    calls = {name: f"{name}.run()"
             for name in ("ping", "isolation", "throughput", "steps", "footprint")}
    calls["sweep"] = f"throughput.sweep({SWEEP}, {SWEEP_REQUESTS})"
    for name, call in calls.items():
        # Each in its own process, so that nothing one leaves behind (connections,
        # threads) weighs on the next.
        module = call.split(".")[0]
        out = subprocess.run(
            [sys.executable, "-c", f"import json, {module}; print(json.dumps({call}))"],
            cwd=BENCH, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
        shown = {k: v for k, v in results[name].items() if k != "samples_ms"}
        print(name, json.dumps(shown), flush=True)
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "performance.json").write_text(json.dumps(results) + "\n")
    p, i, t, f = (results[k] for k in ("ping", "isolation", "throughput", "footprint"))
    floor = t["raw_consume_event_ack_per_s"] / t["raw_consume_ack_per_s"]
    sweep = results["sweep"]
    ping_png = plots.ping_latency(p["samples_ms"], {
        "baseline_raw_nodelay": "baseline: raw stomp.py responder, TCP_NODELAY",
        "opsagent_idle": "opsagent idle",
        "opsagent_saturated": "opsagent, every worker busy, 1,000 jobs queued"})
    sweep_png = plots.throughput_concurrency(sweep)
    rss_key = next(k for k in f if k.startswith("rss_after_") and k.endswith("requests_mb")
                   and "warmup" not in k)
    lines = [
        "<!-- host:begin -->",
        "## The host",
        "",
        f"Measured by `make bench` on {datetime.date.today()} on {machine()}, against the "
        "local ActiveMQ 5.17 started by `scripts/services.sh`, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Every figure has its baseline from the same run "
        "beside it.",
        "",
        "### health_ping round trip (ms)",
        "",
        "| case | p50 | p99 | target |",
        "|---|---|---|---|",
        f"| baseline: raw stomp.py responder, ack then reply, no TCP_NODELAY | "
        f"{p['baseline_raw_no_nodelay']['p50_ms']} | {p['baseline_raw_no_nodelay']['p99_ms']} | |",
        f"| baseline: same with TCP_NODELAY (the floor) | {p['baseline_raw_nodelay']['p50_ms']} | "
        f"{p['baseline_raw_nodelay']['p99_ms']} | |",
        f"| opsagent idle | {p['opsagent_idle']['p50_ms']} | {p['opsagent_idle']['p99_ms']} | "
        "p50 ≤ 1, p99 ≤ 5 |",
        f"| opsagent, every worker busy, 1,000 jobs queued | {p['opsagent_saturated']['p50_ms']} "
        f"| {p['opsagent_saturated']['p99_ms']} | p99 ≤ 10 |",
        "",
        f"![health_ping latency distribution, idle vs saturated]({ping_png})",
        "",
        "### Throughput, no-op `thread` capability",
        "",
        f"{t['requests']:,} requests queued before each run; median of {t['rounds']} "
        "alternating rounds, each run in a fresh process, after a warm-up of each. The "
        "second baseline is a raw stomp.py consumer doing exactly the wire work the "
        "contract asks for each request and nothing else: parse the JSON body, publish one "
        "JSON event, ack; it runs in a process of its own and the time runs until a "
        "watcher in the measuring process has every event, as for the host.",
        "",
        "| | requests/s | opsagent's ratio to it | target |",
        "|---|---|---|---|",
        f"| baseline: raw consume-and-ack loop | {t['raw_consume_ack_per_s']} | "
        f"{t['ratio']} | ≥ 0.8 |",
        "| baseline: raw consume, parse, publish an event, ack (the contract's wire work) | "
        f"{t['raw_consume_event_ack_per_s']} | "
        f"{t['ratio_to_raw_with_events']} | |",
        f"| opsagent: parse, validate, journal, run, event, ack, two log lines (rounds: "
        f"{', '.join(str(v) for v in t['opsagent_rounds_per_s'])}) | {t['opsagent_per_s']} "
        "| | |",
        "",
        *budget_lines(t, results["steps"], floor),
        "",
        f"The same at several lane concurrencies (`[capability.test_noop] concurrency`), "
        f"{sweep['requests']:,} requests each, beside the raw loop over as many messages "
        f"measured in the same run ({sweep['raw_consume_ack_per_s']} msg/s):",
        "",
        "| concurrency | " + " | ".join(str(x["concurrency"]) for x in sweep["points"]) + " |",
        "|---|" + "---|" * len(sweep["points"]),
        "| opsagent (requests/s) | "
        + " | ".join(str(x["opsagent_per_s"]) for x in sweep["points"]) + " |",
        "| ratio to the raw loop | "
        + " | ".join(str(x["ratio"]) for x in sweep["points"]) + " |",
        "",
        f"![throughput vs lane concurrency]({sweep_png})",
        "",
        "### Process isolation overhead per job",
        "",
        "| thread job p50 (ms) | process job p50 (ms) | overhead p50 (ms) | target |",
        "|---|---|---|---|",
        f"| {i['thread_job_p50_ms']} | {i['process_job_p50_ms']} | "
        f"{i['process_overhead_p50_ms']} | ≤ 50 |",
        "",
        "### Start-up and memory",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| start-up to subscribed, bundled plugins installed (s) | "
        f"{f['startup_to_subscribed_s']} | ≤ 1 |",
        f"| idle RSS (MB) | {f['idle_rss_mb']} | ≤ 60 |",
        f"| RSS after a 5,000-request warm-up batch (MB) | {f['rss_after_warmup_mb']} | |",
        f"| RSS after {rss_key.split('_')[2]} more requests (MB) | {f[rss_key]} | |",
        f"| growth over those requests, from the warm-up (MB) | {f['rss_growth_mb']} | ≤ 5 |",
        "<!-- host:end -->",
    ]
    performance = ROOT / "docs" / "performance.md"
    write_section(performance, "host", "\n".join(lines))
    write_section(performance, "journal_sync", section("journal_sync"))
    if args.host_only:
        print("wrote the host and journal sections of docs/performance.md")
        return
    fetch = measured("fetch_payload_log", "--sizes", FETCH_SIZES)
    fetch_png = plots.fetch_size(fetch["sizes"])
    write_section(performance, "fetch_payload_log", section("fetch_payload_log", fetch, fetch_png))
    write_section(performance, "rucio_snapshot", section("rucio_snapshot"))
    write_section(performance, "campaign_provenance", section("campaign_provenance"))
    print("wrote docs/performance.md")
    subprocess.run([sys.executable, str(BENCH / "reliability.py"),
                    *(["--quick"] if args.quick_reliability else [])], cwd=BENCH, check=True)


def measured(bench: str, *args: str) -> dict:
    """Run ``bench/<bench>.py`` in a process of its own (it prints its figures) and
    return the result it hands back with ``--json``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{bench}.json"
        subprocess.run(
            [sys.executable, str(BENCH / f"{bench}.py"), "--json", str(out), *args], check=True
        )
        return json.loads(out.read_text())


def section(bench: str, result: dict | None = None, *extra: str) -> str:
    """The marked section of ``bench``: its own ``markdown()`` of a fresh run (or of
    ``result``)."""
    if result is None:
        result = measured(bench)
    return "\n".join(importlib.import_module(bench).markdown(result, *extra))


def write_section(path: Path, name: str, block: str) -> None:
    """Replace (or insert after the title) the ``<!-- name:begin/end -->`` section."""
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{block}\n{rest}"
    path.write_text(text)


if __name__ == "__main__":
    main()
