"""Benchmark of fetch_payload_log: a ~100 MB log tarball through the host, beside the same by hand.

By hand (the baseline, in the same run): ``xrdcp -f --nopbar <pfn> log.tgz`` then
``tar -xzf log.tgz`` of the four kept members.  Through the host: ``opsagent run`` on
the local ActiveMQ, a STOMP caller sends ``fetch_payload_log`` for a PanDA id not yet
cached and waits for ``payload_log_ready`` -- Rucio resolution, xrdcp, the checked
extraction, ``.done`` and the atomic swap included.  Rounds alternate hand and host
(after one warm-up of each, so both read the tarball from the page cache); the
figures are medians.  Target: host ≤ 1.15 × hand.

Needs ``scripts/services.sh start activemq xrootd rucio``.

    .venv/bin/python bench/fetch_payload_log.py [--mb 100] [--rounds 9] [--json FILE]
        [--sizes 10,30,100,200 [--size-rounds 3]]

``bench/run_all.py`` puts :func:`markdown` of the result into docs/performance.md (its
own section).  ``--sizes`` also measures both paths at each tarball size (median of
``--size-rounds``), from which run_all.py draws the time-vs-size plot
(docs/img/fetch-size.png).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from common import report, result_option  # noqa: E402
from opsagent_fetch_payload_log import demo  # noqa: E402
from support import Caller, HostProcess, service_env  # noqa: E402

TARGET = 1.15
SIZES = (10, 30, 100, 200)
RAW_PER_MB = 2.55
BEGIN, END = "<!-- fetch_payload_log:begin -->", "<!-- fetch_payload_log:end -->"
KEPT = ("payload.stdout", "payload.stderr", "pilotlog.txt", "pandatracerlog.txt")
#: Share of the uncompressed bytes per member; the rest of a pilot's tarball is skipped.
SHARES = {
    "payload.stdout": 0.55,
    "pilotlog.txt": 0.2,
    "payload.stderr": 0.05,
    "pandatracerlog.txt": 0.01,
    "jobReport.json": 0.04,
    "memory_monitor_output.txt": 0.15,
}


def log_text(size: int, rng: random.Random) -> bytes:
    """Log-like text: timestamped lines, half of them carrying random payload."""
    out = io.BytesIO()
    n = 0
    while out.tell() < size:
        n += 1
        noise = base64.b64encode(rng.randbytes(48)).decode() if n % 2 else "ok"
        out.write(
            f"2026-11-29 12:{n // 3600 % 60:02d}:{n % 60:02d} | INFO | step {n} | "
            f"{noise}\n".encode()
        )
    return out.getvalue()[:size]


def tarball(mb: int) -> bytes:
    """A pilot-shaped log tarball of about ``mb`` MB compressed."""
    rng = random.Random(20261129)
    raw = int(mb * RAW_PER_MB * (1 << 20))  # this text compresses to ~39 %
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name, share in SHARES.items():
            data = log_text(int(raw * share), rng)
            info = tarfile.TarInfo(f"tarball_PandaJob_1_BENCH/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def by_hand(pfn: str, work: Path) -> float:
    shutil.rmtree(work, ignore_errors=True)
    (work / "out").mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run(["xrdcp", "-f", "--nopbar", pfn, str(work / "log.tgz")], check=True)
    subprocess.run(
        [
            "tar",
            "-xzf",
            str(work / "log.tgz"),
            "-C",
            str(work / "out"),
            "--wildcards",
            *(f"*/{m}" for m in KEPT),
        ],
        check=True,
    )
    elapsed = time.perf_counter() - started
    shutil.rmtree(work, ignore_errors=True)
    return elapsed


def through_host(caller: Caller, host: HostProcess, lfn: str, pandaid: int) -> float:
    started = time.perf_counter()
    rid = caller.send(
        "fetch_payload_log",
        {"scope": demo.SCOPE, "lfn": lfn, "jeditaskid": "900", "pandaid": str(pandaid)},
    )
    event = caller.wait_event(rid, timeout=120)
    elapsed = time.perf_counter() - started
    if event.get("msg_type") != "payload_log_ready" or event.get("cached"):
        raise RuntimeError(f"unexpected answer: {event}")
    shutil.rmtree(host.tmp / "cache" / "panda-logs" / "900" / str(pandaid))
    return elapsed


def run(mb: int = 100, rounds: int = 9) -> dict[str, Any]:
    services = Path(os.environ.get("OPSAGENT_SERVICES", ROOT / ".services"))
    broker = service_env("activemq")
    seeded = demo.seed(services)
    xrd = demo.read_env(services / "xrootd.env")
    client = demo.admin_client(
        seeded["rucio_url"],
        seeded["account"],
        seeded["username"],
        Path(seeded["password_file"]).read_text().strip(),
        services / "demo" / "rucio-token",
    )
    data = tarball(mb)
    lfn = f"panda.bench.{len(data)}.log.tgz"
    pfn = demo.store_and_register(
        client,
        rse=demo.RSE,
        scope=demo.SCOPE,
        name=lfn,
        data=data,
        xrootd_url=xrd["XROOTD_TEST_URL"],
        xrootd_data=Path(xrd["XROOTD_DATA"]),
        area="bench",
    )
    raw = sum(int(mb * RAW_PER_MB * (1 << 20) * s) for s in SHARES.values())
    result: dict[str, Any] = {
        "tarball_mb": round(len(data) / (1 << 20), 1),
        "uncompressed_mb": round(raw / (1 << 20), 1),
        "kept_mb": round(raw * sum(SHARES[k] for k in KEPT) / (1 << 20), 1),
        "rounds": rounds,
    }
    with tempfile.TemporaryDirectory(dir=ROOT / ".services") as tmp:
        hosts = {}
        for fsync in (True, False):
            h = HostProcess(
                Path(tmp) / f"host-fsync-{fsync}",
                broker,
                name=f"bench-{fsync}",
                paths=(),
                extra={
                    "capabilities": {"allow": ["fetch_payload_log"]},
                    "credentials.x509_proxy": {"file": seeded["proxy"]},
                    "credentials.rucio_userpass": {"file": seeded["password_file"]},
                    "capability.fetch_payload_log": {
                        "rucio_url": seeded["rucio_url"],
                        "auth_type": "userpass",
                        "account": seeded["account"],
                        "username": seeded["username"],
                        "fsync": fsync,
                    },
                },
            )
            hosts[fsync] = (h.start(), Caller(broker, h.queue, h.topic))
        try:
            times: dict[str, list[float]] = {"hand": [], "host": [], "host_nofsync": []}
            pandaid = 1
            for i in range(rounds + 1):  # round 0 warms the page cache and the fork server
                t_hand = by_hand(pfn, Path(tmp) / "hand")
                pandaid += 1
                t_host = through_host(hosts[True][1], hosts[True][0], lfn, pandaid)
                pandaid += 1
                t_nofsync = through_host(hosts[False][1], hosts[False][0], lfn, pandaid)
                if i:
                    times["hand"].append(t_hand)
                    times["host"].append(t_host)
                    times["host_nofsync"].append(t_nofsync)
                print(
                    f"round {i}: hand {t_hand:.3f} s, host {t_host:.3f} s, "
                    f"host without fsync {t_nofsync:.3f} s",
                    flush=True,
                )
        finally:
            for h, c in hosts.values():
                c.close()
                h.stop()
    for key, values in times.items():
        result[f"{key}_s"] = round(statistics.median(values), 3)
        result[f"{key}_min_s"] = round(min(values), 3)
    for suffix in ("", "_min"):
        result[f"ratio{suffix}"] = round(result[f"host{suffix}_s"] / result[f"hand{suffix}_s"], 3)
        result[f"ratio_nofsync{suffix}"] = round(
            result[f"host_nofsync{suffix}_s"] / result[f"hand{suffix}_s"], 3
        )
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def by_size(sizes: tuple[int, ...] = SIZES, rounds: int = 3) -> list[dict[str, Any]]:
    """Both paths at each tarball size, in MB (compressed)."""
    return [run(mb, rounds) for mb in sizes]


def size_lines(rows: list[dict[str, Any]], image: str | None) -> list[str]:
    out = [
        "",
        "### Time vs tarball size",
        "",
        f"The same two paths at each size, median of {rows[0]['rounds']} alternating rounds "
        "after a warm-up:",
        "",
        "| tarball (MB) | kept members (MB) | by hand (s) | through the host (s) | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['tarball_mb']} | {r['kept_mb']} | {r['hand_s']} | {r['host_s']} | {r['ratio']} |"
        )
    if image:
        out += ["", f"![fetch_payload_log time vs tarball size]({image})"]
    return out


def markdown(r: dict[str, Any], image: str | None = None) -> list[str]:
    sizes = size_lines(r["sizes"], image) if r.get("sizes") else []
    return [
        BEGIN,
        "## fetch_payload_log: a ~100 MB log tarball end to end",
        "",
        f"`bench/fetch_payload_log.py`: a pilot-shaped tarball of {r['tarball_mb']} MB "
        f"({r['uncompressed_mb']} MB uncompressed, {r['kept_mb']} MB of it in the four kept "
        "members) on the local xrootd, registered in the local Rucio. Through the host: request "
        "on ActiveMQ to `payload_log_ready`, with Rucio resolution, xrdcp, the checked "
        "extraction, `.done` and the atomic swap. By hand, in the same run: `xrdcp` then "
        f"`tar -xzf` of the four members. Median of {r['rounds']} alternating rounds after a "
        "warm-up.",
        "",
        "| path | median (s) | ratio | fastest (s) | ratio | target |",
        "|---|---|---|---|---|---|",
        f"| by hand: xrdcp + tar | {r['hand_s']} | 1 | {r['hand_min_s']} | 1 | |",
        f"| through the host (fsync on, the default) | {r['host_s']} | {r['ratio']} | "
        f"{r['host_min_s']} | {r['ratio_min']} | ≤ {TARGET} |",
        f"| through the host, fsync off | {r['host_nofsync_s']} | {r['ratio_nofsync']} | "
        f"{r['host_nofsync_min_s']} | {r['ratio_nofsync_min']} | |",
        "",
        f"Load average at the end of the run: {', '.join(map(str, r['load_average']))} "
        "(2 cores, shared with the other services).",
        "",
        "The hand-run baseline neither checks members nor syncs anything to disk; the host "
        "fsyncs the kept files, `.done` and the directory before the swap, so that a power "
        "loss cannot leave a `.done` beside empty files.",
        *sizes,
        END,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=9)
    result_option(ap)
    ap.add_argument(
        "--sizes",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        help=f"also measure at these tarball sizes in MB (e.g. {','.join(map(str, SIZES))}) "
        "and plot time vs size",
    )
    ap.add_argument("--size-rounds", type=int, default=3)
    args = ap.parse_args()
    result = run(args.mb, args.rounds)
    if args.sizes:
        result["sizes"] = by_size(args.sizes, args.size_rounds)
    report(result, markdown(result)[6:11], args.json)


if __name__ == "__main__":
    main()
