"""The figures of docs/performance.md, drawn from the measurements of the same run.

Each function takes what a benchmark returned and writes one PNG under docs/img/,
returning the path relative to docs/ (for the page's Markdown).  Agg backend: no
display needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
IMG = DOCS / "img"


def _save(fig: Any, name: str) -> str:
    IMG.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No timestamp in the file, so an unchanged figure is an unchanged file.
    fig.savefig(IMG / name, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return f"img/{name}"


def ping_latency(samples_ms: Mapping[str, Sequence[float]], labels: Mapping[str, str]) -> str:
    """Distribution (share of pings at or below each latency) of each case, log scale."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in labels.items():
        values = sorted(samples_ms[key])
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                label=f"{label} (n={n})")
    ax.set_xscale("log")
    ax.set_xlabel("health_ping round trip (ms, log scale)")
    ax.set_ylabel("share of pings at or below")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title("health_ping latency: idle vs every worker busy and 1,000 jobs queued")
    return _save(fig, "ping-latency.png")


def throughput_concurrency(sweep: Mapping[str, Any]) -> str:
    """The no-op capability's requests/s per lane concurrency, beside the raw loop's rate."""
    points = sweep["points"]
    xs = [p["concurrency"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, [p["opsagent_per_s"] for p in points], "o-",
            label="opsagent, no-op thread capability (journal, event, ack)")
    ax.axhline(sweep["raw_consume_ack_per_s"], color="grey", linestyle="--",
               label="baseline: raw stomp.py consume-and-ack loop")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.set_xlabel("lane concurrency (jobs at once)")
    ax.set_ylabel("requests / s")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center right", fontsize="small")
    ax.set_title(f"Throughput vs concurrency, {sweep['requests']:,} requests per point")
    return _save(fig, "throughput-concurrency.png")


def fetch_size(rows: Sequence[Mapping[str, Any]]) -> str:
    """fetch_payload_log end to end through the host vs xrdcp + tar by hand, per size."""
    xs = [r["tarball_mb"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, [r["host_s"] for r in rows], "o-", label="through the host (fsync on)")
    ax.plot(xs, [r["hand_s"] for r in rows], "s--", color="grey",
            label="baseline: xrdcp + tar by hand")
    ax.set_xlabel("log tarball (MB, compressed)")
    ax.set_ylabel("median time (s)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("fetch_payload_log: time vs tarball size")
    return _save(fig, "fetch-size.png")
