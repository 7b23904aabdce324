"""Seed the local Rucio server with a production campaign, through rucio-clients.

The campaign looks like the experiment's: datasets ``/<stage>/<version>/<detector>/
<physics path>`` in scope ``epic`` over the stages RECO and FULL, two or three files
each, replicated by rules on several RSEs.  Some dataset replicas are complete, some
are not (a rule at an RSE that holds only part of the files), some datasets have no
replica at all, and closed datasets carry their own length and bytes while open ones
report null (as Rucio does).  Dataset replica counters are made by the server's own
daemon (``rucio-abacus-collection-replica``), run once from the server's venv.

Seeding is idempotent: a campaign already present with the expected datasets is left
alone.  Also runnable: ``python rucio_seed.py <version> [count]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

SCOPE = "epic"
STAGES = ("RECO", "FULL")
RSES = ("BNL-XRD", "EIC-XRD", "JLAB-DISK")
BEAMS = ("5x41", "5x100", "10x100", "10x275", "18x275")
DETECTORS = ("epic_craterlake", "epic_ip6_extended")
FILE_BYTES = 1_000_000
ROOT = Path(__file__).resolve().parents[3]


def services_dir() -> Path:
    return Path(os.environ.get("OPSAGENT_SERVICES") or ROOT / ".services")


def physics_paths() -> Iterator[str]:
    """Physics paths that cover every rule of the matcher."""
    for b in BEAMS:
        for q in (1, 10, 100, 1000):
            yield f"DIS/NC/{b}/minQ2={q}"
        for q in (100, 1000):
            yield f"DIS/CC/{b}/minQ2={q}"
        for q in ("q2_0to1", "q2_1to100", "q2_100to100000"):
            yield f"SIDIS/pythia6-eic/1.0.0/{b}/{q}"
        for q in ("q2_1_10", "q2_10_100"):
            yield f"DDIS/rapgap_3.310/{b}/{q}"
        yield f"EXCLUSIVE/DVCS_ABCONV/{b}/q2_5"
        yield f"EXCLUSIVE/TCS_ABCONV/{b}/hel_minus"  # no Q2 label
        yield f"Bkg_1SignalPer2usFrame/Nov2025/DIS/NC/{b}/minQ2=10"  # segments before
        yield f"DIS/NC/{b}/minQ2=10/pythia8NCDIS_{b}_minQ2=10_beamEffects_xAngle=-0.025_hiDiv"
    for species in ("e-", "pi+", "mu-", "gamma", "proton", "kaon+"):
        for energy in ("100MeV", "1GeV", "10GeV", "20GeV"):
            for angle in ("3to50deg", "45to135deg"):
                yield f"SINGLE/{species}/{energy}/{angle}"
    for particle, energy in (
        ("electron", "10GeV"),
        ("electron", "18GeV"),
        ("proton", "100GeV"),
        ("proton", "275GeV"),
    ):
        yield f"BACKGROUNDS/beamgas/{particle}/GETaLM1.0.0/{energy}"
    yield "BACKGROUNDS/synrad/bgs_1ms"  # no beam, no energy
    yield "BACKGROUNDS/synrad/bgs_10ms"


def campaign_names(version: str, count: int | None = None) -> list[str]:
    """Dataset names of a campaign: every physics path, detector and stage; with
    ``count``, that many (cycling the paths with a part number) for benchmarks."""
    base = [f"/{s}/{version}/{d}/{p}" for s in STAGES for d in DETECTORS for p in physics_paths()]
    if count is None:
        return base
    return [
        base[i] if i < len(base) else f"{base[i % len(base)]}/part{i // len(base):03d}"
        for i in range(count)
    ]


@attrs.frozen
class Layout:
    """Where one dataset's files are: the numbers the tests check the snapshot against."""

    name: str
    files: int
    #: RSE -> how many of the files it holds (a rule exists at each of these RSEs).
    at: dict[str, int]
    closed: bool


def layout(names: list[str]) -> list[Layout]:
    """A deterministic, varied replica layout for ``names``."""
    out = []
    for i, name in enumerate(names):
        files = 3 if i % 4 == 0 else 2
        at: dict[str, int] = {}
        if i % 11 == 5:
            files = 0  # declared, nothing produced yet: no file, no replica
        else:
            at["BNL-XRD"] = files
            if i % 3 == 0:
                at["EIC-XRD"] = 1  # incomplete: one file of several
            if i % 5 == 0:
                at["JLAB-DISK"] = files
        out.append(Layout(name=name, files=files, at=at, closed=i % 7 == 0))
    return out


def file_name(version: str, i: int, j: int) -> str:
    return f"{version}.{i:05d}.{j}.edm4eic.root"


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for k in range(0, len(items), n):
        yield items[k : k + n]


def setup_server(client: Any) -> None:
    """Scope and RSEs (with unlimited quota for the seeding account); idempotent."""
    from rucio.common.exception import Duplicate, RSEProtocolPriorityError

    account = client.account
    if SCOPE not in client.list_scopes():
        try:
            client.add_scope(account, SCOPE)
        except Duplicate:
            pass
    existing = {r["rse"] for r in client.list_rses()}
    for rse in RSES:
        if rse not in existing:
            client.add_rse(rse, deterministic=True)
            try:
                client.add_protocol(
                    rse,
                    {
                        "scheme": "root",
                        "hostname": "127.0.0.1",
                        "port": 1094,
                        "prefix": f"/data/{rse.lower()}",
                        "impl": "rucio.rse.protocols.xrootd.Default",
                        "domains": {
                            "lan": {"read": 1, "write": 1, "delete": 1},
                            "wan": {
                                "read": 1,
                                "write": 1,
                                "delete": 1,
                                "third_party_copy_read": 1,
                                "third_party_copy_write": 1,
                            },
                        },
                    },
                )
            except RSEProtocolPriorityError:
                pass
        client.set_local_account_limit(account, rse, -1)


def marker(version: str) -> str:
    """A dataset created last: its presence means the campaign was seeded to the end."""
    return f"/seeded/{version}"


def is_seeded(client: Any, version: str) -> bool:
    from rucio.common.exception import DataIdentifierNotFound

    try:
        client.get_did(SCOPE, marker(version))
        return True
    except DataIdentifierNotFound:
        return False


def existing_datasets(client: Any, version: str) -> set[str]:
    found: set[str] = set()
    for stage in STAGES:
        found.update(client.list_dids(SCOPE, {"name": f"/{stage}/{version}/*"}, did_type="dataset"))
    return found


def run_abacus() -> None:
    """Let the server's own daemon compute the dataset replica counters, once."""
    d = services_dir() / "rucio"
    exe = d / "venv" / "bin" / "rucio-abacus-collection-replica"
    if not exe.exists():
        raise RuntimeError(f"{exe} not found: run `scripts/services.sh install rucio`")
    env = {**os.environ, "RUCIO_HOME": str(d), "RUCIO_CONFIG": str(d / "etc" / "rucio.cfg")}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [str(exe), "--run-once", "--limit", "1000000"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )


def lagging(client: Any, plan: list[Layout]) -> list[str]:
    """The datasets whose replica counters do not yet say what ``plan`` seeded."""
    want = {ds.name: {rse: n for rse, n in ds.at.items()} for ds in plan}
    got: dict[str, dict[str, int]] = {ds.name: {} for ds in plan}
    for chunk in _chunks([{"scope": SCOPE, "name": ds.name} for ds in plan], 500):
        for rep in client.list_dataset_replicas_bulk(chunk):
            if rep.get("name") in got:
                got[rep["name"]][rep["rse"]] = rep.get("available_length")
    return [name for name in want if got[name] != want[name]]


def settle(client: Any, plan: list[Layout], tries: int = 6) -> None:
    """Run the counter daemon until every dataset replica counts what was seeded.

    One run is not always enough: the daemon shares its work out among the instances
    its heartbeats say are alive, and another session's recent run (this server is
    shared) can leave part of the work to an instance that has already exited.
    """
    for _ in range(tries):
        run_abacus()
        behind = lagging(client, plan)
        if not behind:
            return
        time.sleep(1)
    raise RuntimeError(f"dataset replica counters still lag after {tries} runs: {behind[:3]}")


def seed_campaign(client: Any, version: str, count: int | None = None) -> list[Layout]:
    """Make campaign ``version`` exist on the server; returns its layout."""
    plan = layout(campaign_names(version, count))
    seed_layout(client, version, plan)
    return plan


def seed_layout(client: Any, version: str, plan: list[Layout]) -> None:
    """Make the datasets of ``plan`` (all of campaign ``version``) exist on the server,
    in a few bulk requests; a campaign seeded before is left alone."""
    if SCOPE in client.list_scopes() and is_seeded(client, version):
        return
    have = existing_datasets(client, version)
    if have:
        raise RuntimeError(
            f"campaign {version} is half seeded ({len(have)} of {len(plan)} datasets): "
            f"restart Rucio with an empty database: RUCIO_FRESH=true scripts/services.sh "
            f"restart rucio"
        )
    setup_server(client)
    started = time.monotonic()
    files_at: dict[str, list[dict[str, Any]]] = {rse: [] for rse in RSES}
    attachments = []
    for i, ds in enumerate(plan):
        files = [
            {
                "scope": SCOPE,
                "name": file_name(version, i, j),
                "bytes": FILE_BYTES + j,
                "adler32": "0cc737eb",
            }
            for j in range(ds.files)
        ]
        for rse, n in ds.at.items():
            files_at[rse].extend(files[:n])
        if files:
            attachments.append(
                {
                    "scope": SCOPE,
                    "name": ds.name,
                    "dids": [{"scope": SCOPE, "name": f["name"]} for f in files],
                }
            )
    for rse, files in files_at.items():
        for chunk in _chunks(files, 200):
            client.add_replicas(rse, chunk)
    for chunk in _chunks(plan, 200):
        client.add_dids([{"scope": SCOPE, "name": ds.name, "type": "DATASET"} for ds in chunk])
    for chunk in _chunks(attachments, 200):
        client.attach_dids_to_dids(chunk)
    for rse in RSES:
        dids = [{"scope": SCOPE, "name": ds.name} for ds in plan if rse in ds.at]
        for chunk in _chunks(dids, 200):
            client.add_replication_rule(chunk, 1, rse)
    for ds in plan:
        if ds.closed:
            client.set_status(SCOPE, ds.name, open=False)
    settle(client, plan)
    client.add_dataset(SCOPE, marker(version))
    print(
        f"seeded {version}: {len(plan)} datasets in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )


def admin_client(url: str, account: str, username: str, password: str) -> Any:
    import tempfile

    from opsagent import rucio_client

    return rucio_client(
        tempfile.mkdtemp(prefix="rucio-admin-token-"),
        rucio_host=url,
        auth_host=url,
        account=account,
        auth_type="userpass",
        creds={"username": username, "password": password},
    )


if __name__ == "__main__":
    env = dict(
        line.split("=", 1)
        for line in (services_dir() / "rucio.env").read_text().split()
        if "=" in line
    )
    c = admin_client(
        env["RUCIO_TEST_URL"],
        env["RUCIO_TEST_ACCOUNT"],
        env["RUCIO_TEST_USERNAME"],
        env["RUCIO_TEST_PASSWORD"],
    )
    seed_campaign(c, sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
