"""Against the real local Rucio server (seeded) and a fake catalogue speaking the contract."""

from __future__ import annotations

import json
import math
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fake_catalogue import FakeCatalogue
from loopback_proxy import RucioRelay
from opsagent import Job, JobFailed, Outcome
from opsagent_rucio_snapshot import SnapshotInput, cachefiles
from opsagent_rucio_snapshot.fetch import (
    BATCH,
    REPLICA_FIELDS,
    Rucio,
    RucioAccess,
    fetch_campaign,
    fetch_campaign_one_by_one,
)
from opsagent_rucio_snapshot.update import update_snapshots
from rucio_seed import FILE_BYTES, SCOPE, STAGES, Layout
from snapshot_cases import CURRENT, LAST, TASKS

pytestmark = pytest.mark.rucio


def run(job: Job, **inp: Any) -> Outcome:
    return update_snapshots(SnapshotInput(**inp), job)


def failed(job: Job, **inp: Any) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        run(job, **inp)
    return caught.value


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def untimed(obj: Any) -> Any:
    """``obj`` with every fetched_at / checked_at blanked: what must repeat between runs."""
    if isinstance(obj, dict):
        return {
            k: ("<t>" if k in ("fetched_at", "checked_at") else untimed(v)) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def expected_record(ds: Layout) -> dict[str, Any]:
    """What the snapshot must say about one seeded dataset."""
    sizes = [FILE_BYTES + j for j in range(ds.files)]
    replicas = [
        {
            "rse": rse,
            "length": ds.files,
            "available_length": n,
            "bytes": sum(sizes),
            "available_bytes": sum(sizes[:n]),
            "state": "AVAILABLE" if n == ds.files else "UNAVAILABLE",
        }
        for rse, n in sorted(ds.at.items())
    ]
    own = (ds.files, sum(sizes)) if ds.closed else (None, None)
    return {
        "did": f"{SCOPE}:{ds.name}",
        "length": own[0],
        "bytes": own[1],
        "rse_replicas": replicas,
    }


def cache(job: Job) -> Path:
    return cachefiles.snapshot_dir(job.cache_dir)


def access(env: dict[str, str], url: str | None = None) -> RucioAccess:
    return RucioAccess(
        url=url or env["RUCIO_TEST_URL"],
        account=env["RUCIO_TEST_ACCOUNT"],
        username=env["RUCIO_TEST_USERNAME"],
        password=env["RUCIO_TEST_PASSWORD"],
    )


def records_of(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["did"]: r for e in snap["campaigns"].values() for r in e["datasets"]}


def expected_records(layout: list[Layout]) -> dict[str, dict[str, Any]]:
    return {f"{SCOPE}:{ds.name}": expected_record(ds) for ds in layout}


def dataset_requests(relay: RucioRelay) -> dict[str, list[str]]:
    """The relay's requests about datasets, by kind (listings, bulk, one dataset)."""
    return {
        "listing": [p for p in relay.seen if p.startswith(f"/dids/{SCOPE}/dids/search")],
        "bulk": [p for p in relay.seen if p.startswith("/replicas/datasets_bulk")],
        "replicas": [
            p for p in relay.seen if p.startswith(f"/replicas/{SCOPE}/") and "/datasets" in p
        ],
        "meta": [p for p in relay.seen if "/meta" in p],
    }


def test_snapshot_of_a_campaign_field_by_field(make_job, campaign) -> None:
    job = make_job()
    outcome = run(job, campaigns=[CURRENT])
    path = cachefiles.snapshot_path(job.cache_dir, CURRENT)
    snap = read(path)
    assert list(snap) == ["fetched_at", "scope", "campaign_name", "campaigns"]
    assert snap["scope"] == SCOPE and snap["campaign_name"] == CURRENT
    layout = campaign[CURRENT]
    assert len(layout) >= 500
    for stage in ("RECO", "FULL"):
        entry = snap["campaigns"][f"/{stage}/{CURRENT}"]
        want = sorted(
            (expected_record(ds) for ds in layout if ds.name.startswith(f"/{stage}/")),
            key=lambda r: r["did"],
        )
        assert "error" not in entry
        assert entry["count"] == len(want) == len(entry["datasets"])
        assert entry["datasets"] == want
    # the layout really has every kind of dataset the spec talks about
    records = [r for e in snap["campaigns"].values() for r in e["datasets"]]
    assert any(r["length"] is None for r in records) and any(r["length"] for r in records)
    assert any(not r["rse_replicas"] for r in records)
    states = {rep["state"] for r in records for rep in r["rse_replicas"]}
    assert states == {"AVAILABLE", "UNAVAILABLE"}
    assert {rep["rse"] for r in records for rep in r["rse_replicas"]} == {
        "BNL-XRD",
        "EIC-XRD",
        "JLAB-DISK",
    }
    assert outcome.status == "ok"
    assert outcome.data["snapshots"][CURRENT]["datasets"] == len(layout)
    assert outcome.data["snapshots"][CURRENT]["snapshot"] == str(path)
    assert sorted(p.name for p in cache(job).iterdir()) == [f"current-{CURRENT}.json"]


def test_a_campaign_takes_one_listing_per_stage_and_one_bulk_request_per_batch(
    make_job, campaign, relay: RucioRelay
) -> None:
    job = make_job(rucio_url=relay.url)
    assert run(job, campaigns=[CURRENT]).status == "ok"
    per_stage = [len([d for d in campaign[CURRENT] if d.name.startswith(f"/{s}/")]) for s in STAGES]
    asked = dataset_requests(relay)
    assert len(asked["listing"]) == len(STAGES)
    assert all("long=True" in p for p in asked["listing"])
    assert len(asked["bulk"]) == sum(math.ceil(n / BATCH) for n in per_stage)
    assert asked["replicas"] == [] and asked["meta"] == []


@pytest.mark.parametrize("parallel", [1, 3])
def test_requests_in_flight_are_bounded(
    rucio_server, campaign, relay: RucioRelay, parallel: int
) -> None:
    relay.delay = 0.02  # long enough for requests to overlap when they may
    with ThreadPoolExecutor(parallel) as pool:
        snap = fetch_campaign(
            Rucio(access(rucio_server, relay.url)), pool, SCOPE, LAST, STAGES, batch=4
        )
    assert records_of(snap) == expected_records(campaign[LAST])
    # the workers' requests, plus at most the stage listing still being read
    assert relay.most_in_flight <= parallel + 1
    if parallel > 1:
        assert relay.most_in_flight >= 2
    counts = [e["count"] for e in snap["campaigns"].values()]
    assert len(dataset_requests(relay)["bulk"]) == sum(math.ceil(n / 4) for n in counts)


def test_bulk_fetch_matches_the_one_at_a_time_fetch_field_by_field(rucio_server, campaign) -> None:
    with ThreadPoolExecutor(4) as pool:
        rucio = Rucio(access(rucio_server))
        bulk = fetch_campaign(rucio, pool, SCOPE, CURRENT, STAGES)
        one = fetch_campaign_one_by_one(rucio, SCOPE, CURRENT, STAGES)
    assert list(bulk["campaigns"]) == list(one["campaigns"])
    for key, entry in one["campaigns"].items():
        assert bulk["campaigns"][key]["count"] == entry["count"] > 0
    got, want = records_of(bulk), records_of(one)
    assert sorted(got) == sorted(want) and len(got) == len(campaign[CURRENT])
    for did, old in want.items():
        new = got[did]
        assert (new["length"], new["bytes"]) == (old["length"], old["bytes"]), did
        assert [r["rse"] for r in new["rse_replicas"]] == [r["rse"] for r in old["rse_replicas"]]
        for a, b in zip(new["rse_replicas"], old["rse_replicas"], strict=True):
            for field in REPLICA_FIELDS:
                assert a[field] == b[field], (did, a["rse"], field)
    assert untimed(bulk) == untimed(one)


def test_a_failing_bulk_request_falls_back_to_one_request_per_dataset(
    rucio_server, campaign, relay: RucioRelay
) -> None:
    relay.fail("/replicas/datasets_bulk")
    with ThreadPoolExecutor(3) as pool:
        snap = fetch_campaign(
            Rucio(access(rucio_server, relay.url)), pool, SCOPE, LAST, STAGES, batch=5
        )
    assert records_of(snap) == expected_records(campaign[LAST])
    asked = dataset_requests(relay)
    assert len(asked["replicas"]) == len(campaign[LAST]) and asked["meta"] == []


def dids(outputs: list[dict[str, Any]] | None) -> list[str]:
    assert outputs is not None
    return sorted(e["did"] for e in outputs)


def names(version: str, *paths: str, detectors=("epic_craterlake",)) -> list[str]:
    return sorted(
        f"{SCOPE}:/{s}/{version}/{d}/{p}"
        for s in ("RECO", "FULL")
        for d in detectors
        for p in paths
    )


def test_matches_replace_each_tasks_outputs_in_the_catalogue(
    make_job, campaign, catalogue: FakeCatalogue
) -> None:
    job = make_job(catalogue_url=catalogue.server.url)
    outcome = run(job, campaigns=[CURRENT], created_by="ann")
    assert outcome.status == "ok", outcome.reason

    nc = [f"DIS/NC/18x275/minQ2={q}" for q in (1, 10, 100, 1000)] + [
        "Bkg_1SignalPer2usFrame/Nov2025/DIS/NC/18x275/minQ2=10",
        "DIS/NC/18x275/minQ2=10/pythia8NCDIS_18x275_minQ2=10_beamEffects_xAngle=-0.025_hiDiv",
    ]
    assert dids(catalogue.outputs("nc-18x275-minq2-10")) == names(CURRENT, *nc)
    assert dids(catalogue.outputs("cc-10x100")) == names(
        CURRENT, "DIS/CC/10x100/minQ2=100", "DIS/CC/10x100/minQ2=1000"
    )
    assert dids(catalogue.outputs("sidis-10x100-q2-1to10")) == names(
        CURRENT,
        "SIDIS/pythia6-eic/1.0.0/10x100/q2_0to1",
        "SIDIS/pythia6-eic/1.0.0/10x100/q2_1to100",
    )
    assert dids(catalogue.outputs("single-pi-10gev")) == names(
        CURRENT,
        "SINGLE/pi+/10GeV/3to50deg",
        "SINGLE/pi+/10GeV/45to135deg",
        detectors=("epic_ip6_extended",),
    )
    assert dids(catalogue.outputs("ddis-18x275-q2-5")) == names(
        CURRENT, "DDIS/rapgap_3.310/18x275/q2_1_10"
    )
    assert dids(catalogue.outputs("tcs-5x41-label")) == names(
        CURRENT,
        "EXCLUSIVE/TCS_ABCONV/5x41/hel_minus",
        detectors=("epic_craterlake", "epic_ip6_extended"),
    )
    assert catalogue.outputs("dis-plain") == []
    assert catalogue.outputs("no-beam-no-physics") == []
    assert catalogue.outputs("last-campaign-task") is None  # another campaign: untouched

    # the rest of the overrides is kept; the stale output is gone
    assert catalogue.tasks["nc-18x275-minq2-10"]["overrides"]["nevents"] == 1000
    patches = catalogue.patches()
    assert len(patches) == len([t for t in TASKS if t["campaign"] == CURRENT])
    assert {p.header("X-Remote-User") for p in patches} == {"ann"}

    # one output entry checked against the seeded layout
    snap = read(cachefiles.snapshot_path(job.cache_dir, CURRENT))
    [entry] = [
        e
        for e in catalogue.outputs("cc-10x100")
        if e["did"] == f"{SCOPE}:/RECO/{CURRENT}/epic_craterlake/DIS/CC/10x100/minQ2=100"
    ]
    ds = next(d for d in campaign[CURRENT] if f"{SCOPE}:{d.name}" == entry["did"])
    assert entry["stage"] == "RECO" and entry["version"] == CURRENT
    assert entry["checked_at"] == snap["fetched_at"]
    assert entry["rses"] == [
        {"rse": rse, "files": n, "total": ds.files, "complete": n == ds.files}
        for rse, n in sorted(ds.at.items())
    ]
    assert entry["file_count"] == ds.files
    assert entry["complete"] == (bool(ds.at) and all(n == ds.files for n in ds.at.values()))

    # matches and unmatched beside the snapshot; together they cover every dataset
    doc = read(cachefiles.matches_path(job.cache_dir, CURRENT))
    assert doc["fetched_at"] == snap["fetched_at"] and doc["campaign_name"] == CURRENT
    by_name = {t["name"]: t for t in doc["tasks"]}
    assert by_name["cc-10x100"]["outputs"] == catalogue.outputs("cc-10x100")
    assert by_name["cc-10x100"]["filters"]["detector"] == "epic_craterlake"
    matched = {e["did"] for t in doc["tasks"] for e in t["outputs"]}
    unmatched = {u["did"] for u in doc["unmatched"]}
    assert not matched & unmatched
    assert matched | unmatched == {f"{SCOPE}:{d.name}" for d in campaign[CURRENT]}
    assert f"{SCOPE}:/FULL/{CURRENT}/epic_craterlake/DIS/CC/5x41/minQ2=100" in unmatched
    assert outcome.data["snapshots"][CURRENT]["tasks_updated"] == len(patches)
    assert outcome.data["snapshots"][CURRENT]["unmatched"] == len(unmatched)


def test_a_second_run_over_the_same_state_changes_nothing_but_the_time(
    make_job, campaign, catalogue: FakeCatalogue
) -> None:
    job = make_job(catalogue_url=catalogue.server.url)
    run(job, campaigns=[CURRENT])
    first = [
        read(cachefiles.snapshot_path(job.cache_dir, CURRENT)),
        read(cachefiles.matches_path(job.cache_dir, CURRENT)),
    ]
    first_tasks = json.loads(json.dumps(catalogue.tasks))
    run(job, campaigns=[CURRENT])
    second = [
        read(cachefiles.snapshot_path(job.cache_dir, CURRENT)),
        read(cachefiles.matches_path(job.cache_dir, CURRENT)),
    ]
    assert untimed(second) == untimed(first)
    assert untimed(catalogue.tasks) == untimed(first_tasks)
    assert len(catalogue.outputs("nc-18x275-minq2-10") or []) == 12  # replaced, not appended


def test_campaigns_come_from_the_catalogue_lifecycle(
    make_job, campaign, catalogue: FakeCatalogue
) -> None:
    catalogue.campaigns = [
        {"version": "24.06.0", "lifecycle": "closed"},
        {"version": LAST, "lifecycle": "current"},
        {"version": "24.08.0", "lifecycle": "producing"},
        {"version": "24.10.0", "lifecycle": "last"},
    ]
    job = make_job(catalogue_url=catalogue.server.url)
    outcome = run(job)
    assert outcome.data["current_campaign"] == LAST
    assert sorted(p.name for p in cache(job).iterdir()) == [
        "current-24.08.0.json",
        "current-24.10.0.json",
        f"current-{LAST}.json",
        f"matches-{LAST}.json",
    ]
    empty = read(cachefiles.snapshot_path(job.cache_dir, "24.10.0"))
    assert empty["campaigns"] == {
        "/RECO/24.10.0": {"count": 0, "datasets": []},
        "/FULL/24.10.0": {"count": 0, "datasets": []},
    }
    assert catalogue.outputs("last-campaign-task")  # the current campaign was matched

    catalogue.campaigns = [{"version": LAST, "lifecycle": "last"}]
    assert "no current campaign defined" in failed(job).reason
    # the configured list wins over the catalogue's; the first one is the current one
    job = make_job(catalogue_url=catalogue.server.url, campaigns=[LAST, "24.10.0"])
    assert run(job).data["current_campaign"] == LAST


def test_a_hostile_catalogue_cannot_name_files_outside_the_cache(
    make_job, campaign, catalogue: FakeCatalogue, tmp_path: Path
) -> None:
    token = f"pwned{uuid.uuid4().hex[:10]}"
    hostile = [
        "x/../../../state",  # next to the cache
        "../" * 12 + f"tmp/{token}",  # anywhere
        "*",  # every dataset of a stage, in the Rucio listing
        "26.02.0\nforged log line",
    ]
    catalogue.campaigns = [
        {"version": hostile[0], "lifecycle": "current"},
        {"version": LAST, "lifecycle": "last"},
        *({"version": v, "lifecycle": "producing"} for v in hostile[1:]),
    ]
    job = make_job(catalogue_url=catalogue.server.url)
    before = {p for p in tmp_path.rglob("*")}
    err = failed(job)
    for version in hostile:
        assert (
            f"{version!r}: not a campaign version like 26.02.0 (as the catalogue lists it): "
            "not refreshed" in err.reason
        ), err.reason
    # The valid campaign is refreshed; nothing else is written anywhere.
    assert f"{LAST}:" not in err.reason
    assert {p for p in tmp_path.rglob("*")} - before == {
        job.cache_dir,
        cache(job),
        cachefiles.snapshot_path(job.cache_dir, LAST),
    }
    assert not list(Path("/tmp").glob(f"{token}*"))
    assert set(err.data["snapshots"]) == {LAST}
    # The current campaign was not a version: nothing matched, the catalogue untouched.
    assert catalogue.patches() == []
    assert [r.arg("campaign") for r in catalogue.server.requests if r.arg("campaign")] == []
    for version in hostile:
        with pytest.raises(ValueError, match="not a campaign version"):
            cachefiles.snapshot_path(job.cache_dir, version)
        with pytest.raises(ValueError, match="not a campaign version"):
            cachefiles.matches_path(job.cache_dir, version)


def test_a_task_named_with_a_dot_segment_is_not_patched_elsewhere(
    make_job, campaign, catalogue: FakeCatalogue
) -> None:
    for name in ("..", "."):  # PATCH .../prod-tasks/../ would be PATCH /pcs/api/
        catalogue.tasks[name] = {"name": name, "campaign": LAST, "filters": {"physics": "NC"}}
    job = make_job(catalogue_url=catalogue.server.url)
    err = failed(job, campaigns=[LAST])
    assert err.reason.startswith(f"{LAST}: catalogue: 2 of 3 task(s) not updated (PATCH task ")
    assert "not a name that can be put in a URL" in err.reason
    assert [r.path for r in catalogue.patches()] == ["/pcs/api/prod-tasks/last-campaign-task/"]
    assert catalogue.outputs("last-campaign-task")


def test_no_campaign_anywhere_is_an_error(make_job, rucio_server) -> None:
    reason = failed(make_job()).reason
    assert reason.startswith("no current campaign defined")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rucio_unreachable_fails_and_leaves_the_old_files(make_job, rucio_server) -> None:
    job = make_job(rucio_url=f"http://127.0.0.1:{_closed_port()}")
    old = cachefiles.snapshot_path(job.cache_dir, LAST)
    cachefiles.write_json_atomic(old, {"old": True})
    err = failed(job, campaigns=[LAST])
    assert "cannot log in as account 'root'" in err.reason
    assert "127.0.0.1" in err.reason
    assert read(old) == {"old": True}
    assert err.data["snapshots"] == {}

    err = failed(make_job(password="wrong"), campaigns=[LAST])
    assert "cannot log in" in err.reason and "wrong" not in err.reason


def test_one_stage_failing_keeps_the_other_and_leaves_the_catalogue_alone(
    make_job, campaign, relay: RucioRelay, catalogue: FakeCatalogue
) -> None:
    relay.fail(f"/FULL/{LAST}/*")  # the stage's listing only
    job = make_job(rucio_url=relay.url, catalogue_url=catalogue.server.url)
    err = failed(job, campaigns=[LAST])
    assert f"{LAST}: stage /FULL/{LAST} failed: listing {SCOPE}:/FULL/{LAST}/*" in err.reason
    assert f"{LAST}: catalogue not updated" in err.reason
    snap = read(cachefiles.snapshot_path(job.cache_dir, LAST))
    full = snap["campaigns"][f"/FULL/{LAST}"]
    assert full["count"] == 0 and full["datasets"] == [] and "RucioException" in full["error"]
    reco = snap["campaigns"][f"/RECO/{LAST}"]
    assert reco["count"] == len([d for d in campaign[LAST] if d.name.startswith("/RECO/")]) > 0
    assert catalogue.patches() == []
    assert not cachefiles.matches_path(job.cache_dir, LAST).exists()


def test_one_dataset_failing_is_kept_with_the_dataset(
    make_job, campaign, relay: RucioRelay, catalogue: FakeCatalogue
) -> None:
    broken = f"/RECO/{LAST}/epic_craterlake/DIS/NC/5x41/minQ2=1"
    relay.fail(f'"{broken}"')  # the bulk request naming it (not minQ2=10 ...)
    relay.fail(broken + "/datasets")  # and its own replica request
    job = make_job(rucio_url=relay.url, catalogue_url=catalogue.server.url)
    err = failed(job, campaigns=[LAST])
    assert err.reason.startswith(f"{LAST}: 1 dataset(s) failed ({SCOPE}:{broken}: ")
    snap = read(cachefiles.snapshot_path(job.cache_dir, LAST))
    records = records_of(snap)
    assert len(records) == len(campaign[LAST])
    assert "RucioException" in records[f"{SCOPE}:{broken}"]["error"]
    assert records[f"{SCOPE}:{broken}"]["rse_replicas"] == []
    assert [d for d, r in records.items() if "error" in r] == [f"{SCOPE}:{broken}"]
    # the rest of its batch was asked for one by one, and is whole
    expected = expected_records(campaign[LAST])
    assert {d: r for d, r in records.items() if "error" not in r} == {
        d: r for d, r in expected.items() if d != f"{SCOPE}:{broken}"
    }
    reco = len([d for d in campaign[LAST] if d.name.startswith("/RECO/")])
    assert len(dataset_requests(relay)["replicas"]) == min(reco, BATCH)
    # the catalogue still gets the campaign, with the failure shown on that output
    outputs = {e["did"]: e for e in catalogue.outputs("last-campaign-task") or []}
    assert "error" in outputs[f"{SCOPE}:{broken}"]
    assert outputs[f"{SCOPE}:{broken}"]["complete"] is False
    assert sum("error" in e for e in outputs.values()) == 1
    assert err.data["snapshots"][LAST]["dataset_errors"] == 1


def test_catalogue_failing_keeps_the_snapshot(make_job, campaign, catalogue: FakeCatalogue) -> None:
    catalogue.list_status = 500
    job = make_job(catalogue_url=catalogue.server.url)
    err = failed(job, campaigns=[LAST])
    assert err.reason.startswith(
        f"{LAST}: catalogue: GET {catalogue.server.url}/pcs/api/"
        f"prod-tasks/?campaign={LAST}: HTTP 500"
    )
    assert cachefiles.snapshot_path(job.cache_dir, LAST).exists()
    assert not cachefiles.matches_path(job.cache_dir, LAST).exists()


def test_one_task_failing_in_the_catalogue_does_not_stop_the_others(
    make_job, campaign, catalogue: FakeCatalogue
) -> None:
    for name in ("a-last", "b-last"):
        catalogue.tasks[name] = {"name": name, "campaign": LAST, "filters": {"physics": "CC"}}
    catalogue.failing_patch.add("a-last")
    job = make_job(catalogue_url=catalogue.server.url)
    err = failed(job, campaigns=[LAST])
    assert err.reason.startswith(f"{LAST}: catalogue: 1 of 3 task(s) not updated (PATCH ")
    assert "/pcs/api/prod-tasks/a-last/: HTTP 500" in err.reason
    assert catalogue.outputs("b-last") and catalogue.outputs("last-campaign-task")
    assert catalogue.outputs("a-last") is None
    assert err.data["snapshots"][LAST]["tasks_updated"] == 2
    assert cachefiles.matches_path(job.cache_dir, LAST).exists()


def test_one_campaign_failing_does_not_stop_the_others(
    make_job, campaign, relay: RucioRelay, catalogue: FakeCatalogue
) -> None:
    relay.fail("/24.10.0/")
    job = make_job(rucio_url=relay.url, catalogue_url=catalogue.server.url)
    kept = cachefiles.snapshot_path(job.cache_dir, "24.10.0")
    cachefiles.write_json_atomic(kept, {"previous": True})
    err = failed(job, campaigns=["24.10.0", LAST])
    assert err.reason.startswith("24.10.0: every stage failed, previous snapshot kept")
    assert f"{LAST}:" not in err.reason
    assert read(kept) == {"previous": True}
    assert read(cachefiles.snapshot_path(job.cache_dir, LAST))["campaign_name"] == LAST
    assert err.data["snapshots"][LAST]["datasets"] == len(campaign[LAST])
    # 24.10.0 was the current one: nothing matched, the catalogue untouched
    assert catalogue.patches() == []


def test_through_the_host_one_event(
    opsagent_harness,
    make_job,
    campaign,
    rucio_server,
    catalogue: FakeCatalogue,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import opsagent_rucio_snapshot as plugin

    (tmp_path / "h0").mkdir(exist_ok=True)  # the harness writes its config there

    monkeypatch.setenv("TEST_RUCIO_PASSWORD", rucio_server["RUCIO_TEST_PASSWORD"])
    h = opsagent_harness(
        modules=[plugin],
        config={
            "credentials.rucio_userpass": {"env": "TEST_RUCIO_PASSWORD"},
            "capability.rucio_snapshot_update": {
                "rucio_url": rucio_server["RUCIO_TEST_URL"],
                "rucio_account": rucio_server["RUCIO_TEST_ACCOUNT"],
                "rucio_username": rucio_server["RUCIO_TEST_USERNAME"],
                "catalogue_url": catalogue.server.url,
            },
        },
    )
    ok = h.send("rucio_snapshot_update", {"campaigns": [LAST], "created_by": "ann"}, timeout=60)
    assert ok["msg_type"] == "rucio_snapshot_ready" and ok["ok"] is True, ok
    assert "error" not in ok and ok["created_by"] == "ann"
    assert catalogue.outputs("last-campaign-task")

    catalogue.list_status = 503
    bad = h.send("rucio_snapshot_update", {"campaigns": [LAST]}, timeout=60)
    assert bad["msg_type"] == "rucio_snapshot_ready" and bad["ok"] is False
    assert bad["error"].startswith(f"{LAST}: catalogue: GET ")
    h.join()
    assert [e["msg_type"] for e in h.events if e["msg_type"] == "rucio_snapshot_ready"] == [
        "rucio_snapshot_ready"
    ] * 2
