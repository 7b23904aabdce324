"""Benchmark of campaign_provenance_sweep: a 1,044-path campaign, the capability vs one at a time.

Both runs go against the local Rucio server started by ``scripts/services.sh start
rucio`` (the campaign seeded here, once, by the tests' seeder) and a loopback fake
catalogue serving the campaign's requested paths, each run in a fresh child process so
its peak RSS is its own.  The measured run is the capability's doer (one long listing,
bulk replica requests of 100 datasets, 16 in flight).  The baseline, measured in the
same run, is the sweep as the hand-run scripts did it: per requested path a listing of
its datasets, then ``get_metadata`` and ``list_dataset_replicas`` per dataset, one
request at a time (``sweep.sweep_one_by_one``), with the same catalogue read, the same
document and the same write.  Both children report a digest of the file without its
``generated_at``; the pair is refused unless the two agree.

A second pair goes through a loopback relay that adds a fixed delay to each Rucio
request: a stand-in for the round trip to a remote Rucio.

    .venv/bin/python bench/campaign_provenance.py [--paths 1040] [--delay-ms 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(ROOT / "plugins" / "campaign_provenance" / "tests"),
    str(ROOT / "plugins" / "rucio_snapshot" / "tests"),
]

from common import report, result_option  # noqa: E402

VERSION = "92.04.0"
TARGET_RATIO = 10.0
BEGIN, END = "<!-- campaign_provenance:begin -->", "<!-- campaign_provenance:end -->"


def rucio_env() -> dict[str, str]:
    from rucio_seed import services_dir

    path = services_dir() / "rucio.env"
    if not path.exists():
        sys.exit(
            "Rucio is not running: scripts/services.sh install rucio && "
            "scripts/services.sh start rucio"
        )
    return dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)


def seeded(env: dict[str, str], paths: int) -> Any:
    from provenance_seed import seed
    from rucio_seed import admin_client

    client = admin_client(
        env["RUCIO_TEST_URL"],
        env["RUCIO_TEST_ACCOUNT"],
        env["RUCIO_TEST_USERNAME"],
        env["RUCIO_TEST_PASSWORD"],
    )
    return seed(client, VERSION, paths)


def one_by_one(job: Any) -> dict[str, Any]:
    """The hand-run way: same catalogue read, one Rucio request at a time, same write."""
    from opsagent_campaign_provenance import ProvenanceInput, cachefile
    from opsagent_campaign_provenance.campaigns import SECTION, catalogue_of
    from opsagent_campaign_provenance.provenance import document
    from opsagent_campaign_provenance.requested import Selection, requests_of
    from opsagent_campaign_provenance.sweep import sweep_one_by_one
    from opsagent_rucio_snapshot.fetch import Rucio
    from opsagent_rucio_snapshot.update import rucio_access

    cfg = job.config
    rows = catalogue_of(cfg, ProvenanceInput(), job).requested_paths(VERSION)
    requests, rejected = requests_of(rows, Selection())
    rucio = Rucio(rucio_access(cfg, job, SECTION))
    assignment, records = sweep_one_by_one(
        rucio, cfg.scope, cfg.stage, VERSION, requests, Selection()
    )
    doc = document(
        scope=cfg.scope,
        stage=cfg.stage,
        version=VERSION,
        rses=tuple(cfg.rses),
        selection=Selection(),
        assignment=assignment,
        records=records,
        rejected=rejected,
    )
    cachefile.write_if_changed(cachefile.provenance_path(job.cache_dir, VERSION), doc)
    return {"counts": doc["counts"], "datasets": len(records)}


def digest(path: Path) -> str:
    doc = json.loads(path.read_text())
    doc.pop("generated_at")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def child(url: str, catalogue: str, mode: str, parallel: int, cache: str) -> None:
    """One sweep in this process (``mode``: bulk or one); prints its figures."""
    from loguru import logger
    from opsagent import Credential, Job
    from opsagent_campaign_provenance import ProvenanceInput, cachefile
    from opsagent_campaign_provenance.campaigns import sweep_campaigns
    from opsagent_campaign_provenance.config import ProvenanceConfig

    logger.remove()
    env = rucio_env()
    job = Job(
        id="bench",
        msg_type="campaign_provenance_sweep",
        cache_dir=Path(cache),
        time_limit=900,
        config=ProvenanceConfig(
            rucio_url=url,
            rucio_account=env["RUCIO_TEST_ACCOUNT"],
            rucio_username=env["RUCIO_TEST_USERNAME"],
            catalogue_url=catalogue,
            parallel=parallel,
        ),
        credentials={
            "rucio_userpass": Credential("rucio_userpass", value=env["RUCIO_TEST_PASSWORD"])
        },
    )
    started = time.perf_counter()
    if mode == "one":
        got = one_by_one(job)
    else:
        info = sweep_campaigns(ProvenanceInput(campaign=VERSION), job).data["campaigns"][VERSION]
        got = {"counts": info["counts"], "datasets": info["datasets"]}
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                **got,
                "digest": digest(cachefile.provenance_path(Path(cache), VERSION)),
            }
        )
    )


def measure(url: str, catalogue: str, mode: str, parallel: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-provenance-") as cache:
        out = subprocess.run(
            [sys.executable, __file__, "--child", url, catalogue, mode, str(parallel), cache],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def pair(url: str, catalogue: str, parallel: int) -> dict[str, Any]:
    one = measure(url, catalogue, "one", 1)
    bulk = measure(url, catalogue, "bulk", parallel)
    if (one["counts"], one["digest"]) != (bulk["counts"], bulk["digest"]):
        sys.exit(f"the two sweeps wrote different files: one at a time {one}, bulk {bulk}")
    return {
        "one_at_a_time_s": one["seconds"],
        "bulk_s": bulk["seconds"],
        "ratio": round(one["seconds"] / bulk["seconds"], 2),
        "peak_rss_one_at_a_time_mb": one["peak_rss_mb"],
        "peak_rss_bulk_mb": bulk["peak_rss_mb"],
        "datasets": bulk["datasets"],
        "counts": bulk["counts"],
    }


def run(paths: int = 1040, delay_ms: float = 10.0, parallel: int = 16) -> dict[str, Any]:
    from fake_catalogue import FakeCatalogue
    from loopback_proxy import RucioRelay
    from opsagent.testing import FakeServer
    from opsagent_rucio_snapshot.fetch import BATCH

    env = rucio_env()
    plan = seeded(env, paths)
    result: dict[str, Any] = {
        "paths": len(plan.paths),
        "parallel": parallel,
        "batch": BATCH,
    }
    with FakeServer() as server:
        FakeCatalogue(server, [], [], requested={VERSION: plan.rows()})
        result["direct"] = pair(env["RUCIO_TEST_URL"], server.url, parallel)
        with RucioRelay(env["RUCIO_TEST_URL"], delay=delay_ms / 1000) as relay:
            result["delayed"] = {"delay_ms": delay_ms, **pair(relay.url, server.url, parallel)}
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def markdown(r: dict[str, Any]) -> list[str]:
    d, s = r["direct"], r["delayed"]
    counts = ", ".join(f"{n:,} {k}" for k, n in d["counts"].items())
    return [
        BEGIN,
        f"## campaign_provenance_sweep: a {r['paths']:,}-path campaign",
        "",
        "`bench/campaign_provenance.py`: the capability's doer against the local Rucio "
        "server and a loopback catalogue serving the campaign's requested paths "
        f"({d['datasets']:,} RECO datasets; {counts}), each run in its own process; the "
        "baseline is the sweep as the hand-run scripts did it, one request at a time (a "
        "listing per requested path, then `get_metadata` + `list_dataset_replicas` per "
        "dataset), in the same run; both write the same file.",
        "",
        "| server | one at a time (s) | "
        f"bulk, {r['parallel']} in flight (s) | ratio | peak RSS one / bulk (MB) | target |",
        "|---|---|---|---|---|---|",
        f"| local, direct | {d['one_at_a_time_s']} | {d['bulk_s']} | {d['ratio']} | "
        f"{d['peak_rss_one_at_a_time_mb']} / {d['peak_rss_bulk_mb']} | |",
        f"| local + {s['delay_ms']:g} ms per request (remote stand-in) | {s['one_at_a_time_s']} | "
        f"{s['bulk_s']} | {s['ratio']} | {s['peak_rss_one_at_a_time_mb']} / "
        f"{s['peak_rss_bulk_mb']} | ≥ {TARGET_RATIO:g} |",
        "",
        "The capability lists the campaign's RECO datasets once in long form and asks for "
        f"their replicas {r['batch']} at a time, so the sweep is "
        f"{2 + -(-d['datasets'] // r['batch'])} Rucio requests or so instead of "
        f"~{r['paths'] + 2 * d['datasets']:,}.",
        "",
        "Load average at the end of the run: "
        + ", ".join(str(x) for x in r.get("load_average", []))
        + " (2 cores, shared with the other services and sessions).",
        END,
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1040)
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--parallel", type=int, default=16)
    result_option(ap)
    args = ap.parse_args()
    result = run(args.paths, args.delay_ms, args.parallel)
    report(result, markdown(result)[5:10], args.json)


if __name__ == "__main__":
    main()
