"""Against the real local Rucio server (a seeded 1,000-path campaign) and the fake catalogue."""

from __future__ import annotations

import json
import math
import os
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fake_catalogue import FakeCatalogue
from loopback_proxy import RucioRelay
from opsagent import Job, JobFailed, Outcome
from opsagent_campaign_provenance import ProvenanceInput
from opsagent_campaign_provenance.cachefile import provenance_dir, provenance_path
from opsagent_campaign_provenance.campaigns import sweep_campaigns
from opsagent_campaign_provenance.provenance import document
from opsagent_campaign_provenance.requested import Selection, requests_of
from opsagent_campaign_provenance.sweep import sweep, sweep_one_by_one
from opsagent_rucio_snapshot.fetch import BATCH, Rucio, RucioAccess
from provenance_seed import EVGEN, VERSION, Plan

pytestmark = pytest.mark.rucio
SCOPE = "epic"


def run(job: Job, **inp: Any) -> Outcome:
    return sweep_campaigns(ProvenanceInput(**inp), job)


def failed(job: Job, **inp: Any) -> JobFailed:
    with pytest.raises(JobFailed) as caught:
        run(job, **inp)
    return caught.value


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def access(env: dict[str, str], url: str | None = None) -> RucioAccess:
    return RucioAccess(
        url=url or env["RUCIO_TEST_URL"],
        account=env["RUCIO_TEST_ACCOUNT"],
        username=env["RUCIO_TEST_USERNAME"],
        password=env["RUCIO_TEST_PASSWORD"],
    )


def by_path(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["detector_config"], p["input_path"]): p for p in doc["paths"]}


def dids(entry: dict[str, Any]) -> list[str]:
    return [d["did"] for d in entry["datasets"]]


def kinds(relay: RucioRelay) -> dict[str, list[str]]:
    return {
        "listing": [p for p in relay.seen if p.startswith(f"/dids/{SCOPE}/dids/search")],
        "bulk": [p for p in relay.seen if p.startswith("/replicas/datasets_bulk")],
        "one": [p for p in relay.seen if p.startswith(f"/replicas/{SCOPE}/") or "/meta" in p],
    }


def test_every_requested_path_gets_the_status_its_data_has(
    make_job, plan: Plan, catalogue: FakeCatalogue
) -> None:
    job = make_job(catalogue_url=catalogue.server.url)
    outcome = run(job, campaign=VERSION)
    path = provenance_path(job.cache_dir, VERSION)
    doc = read(path)
    assert len(plan.paths) >= 1000
    assert doc["schema_version"] == 1 and doc["campaign"] == VERSION
    assert (doc["scope"], doc["stage"], doc["rses"]) == (SCOPE, "RECO", ["BNL-XRD", "EIC-XRD"])
    assert doc["selection"] == {"detector_configs": None, "path_filter": None}
    # every status is there, each path has the one its seeded data makes
    assert doc["counts"] == plan.counts()
    assert all(n > 0 for n in doc["counts"].values())
    got = by_path(doc)
    assert len(got) == len(doc["paths"]) == len(plan.paths)  # duplicates joined
    for p in plan.paths:
        entry = got[(p.detector_config, p.input_path)]
        assert entry["status"] == p.status, p
        assert dids(entry) == sorted(f"{SCOPE}:{n}" for n in p.datasets), p
    assert [e["datasets"][0]["did"] for e in doc["unexpected"]] == [
        f"{SCOPE}:{n}" for n in plan.unexpected
    ]
    assert {e["status"] for e in doc["unexpected"]} == {"unexpected"}
    assert all(e["input_path"] is None for e in doc["unexpected"])
    # the other stage is not RECO
    assert not any("/FULL/" in d for e in doc["paths"] for d in dids(e))
    # the hostile rows are counted and said why, the good ones all taken
    assert doc["rejected"]["count"] == len(plan.hostile_rows)
    assert (
        "row 50: input_path '/volatile/eic/EPIC/EVGEN/../../../etc'" in doc["rejected"]["first"][0]
    )
    # numbers of one partial path, field by field
    partial = next(p for p in plan.paths if p.status == "partial" and len(p.datasets) == 2)
    entry = got[(partial.detector_config, partial.input_path)]
    files = entry["datasets"][0]["files"]
    assert entry["files"] == 2 * files and entry["bytes"] > 0
    assert entry["rses"] == [
        {"rse": "BNL-XRD", "files": 2 * files, "complete": True},
        {"rse": "EIC-XRD", "files": files, "complete": False},
    ]
    assert [r["rse"] for r in entry["datasets"][1]["rses"]] == ["BNL-XRD"]
    assert entry["datasets"][1]["rses"][0]["state"] == "AVAILABLE"
    # the file: world-readable, whole; the event says the same counts
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in provenance_dir(job.cache_dir).iterdir()) == [f"{VERSION}.json"]
    assert outcome.status == "ok"
    assert outcome.data["counts"] == plan.counts()
    info = outcome.data["campaigns"][VERSION]
    assert info["changed"] is True and info["file"] == str(path)
    assert info["generated_at"] == doc["generated_at"]
    assert info["rejected"] == len(plan.hostile_rows)


def test_odd_but_legal_names_are_data(make_job, plan: Plan, catalogue: FakeCatalogue) -> None:
    job = make_job(catalogue_url=catalogue.server.url)
    run(job, campaign=VERSION)
    doc = read(provenance_path(job.cache_dir, VERSION))
    got = by_path(doc)
    cfg = "epic_craterlake"
    assert got[(cfg, EVGEN + "SINGLE/e+/1GeV/-x_y=1..2+3")]["status"] == "complete"
    assert got[(cfg, EVGEN + "SINGLE/e+/1GeV/.dotfirst")]["status"] == "partial"
    like = got[(cfg, EVGEN + "LIKE/q2_1")]
    assert dids(like) == [f"{SCOPE}:/RECO/{VERSION}/{cfg}/LIKE/q2_1"]  # not q2X1, not q2_10
    long = [e for (c, p), e in got.items() if p.startswith(EVGEN + "LONG/")]
    assert len(long) == 1 and len(dids(long[0])[0]) > 230 and long[0]["status"] == "complete"
    unexpected = {e["datasets"][0]["did"]: e for e in doc["unexpected"]}
    for name in (
        f"/RECO/{VERSION}/{cfg}/../../../etc/passwd",
        f"/RECO/{VERSION}/{cfg}/DIS//NC/18x275",
        f"/RECO/{VERSION}/..hidden_cfg/x=1+2",
        f"/RECO/{VERSION}/{cfg}/LIKE/q2X1",
        f"/RECO/{VERSION}/{cfg}/LIKE/q2_10",
    ):
        assert f"{SCOPE}:{name}" in unexpected, name
    assert unexpected[f"{SCOPE}:/RECO/{VERSION}/..hidden_cfg/x=1+2"]["detector_config"] == (
        "..hidden_cfg"
    )
    # a name with ".." segments named nothing on disk
    assert sorted(p.relative_to(job.cache_dir) for p in job.cache_dir.rglob("*")) == [
        Path("provenance"),
        Path("provenance", f"{VERSION}.json"),
    ]


def test_one_listing_and_one_bulk_request_per_hundred_datasets(
    make_job, plan: Plan, catalogue: FakeCatalogue, relay: RucioRelay
) -> None:
    job = make_job(catalogue_url=catalogue.server.url, rucio_url=relay.url, parallel=4)
    outcome = run(job, campaign=VERSION)
    kept = outcome.data["campaigns"][VERSION]["datasets"]
    assert kept == sum(len(p.datasets) for p in plan.paths) + len(plan.unexpected)
    asked = kinds(relay)
    assert len(asked["listing"]) == 1 and "long=True" in asked["listing"][0]
    assert len(asked["bulk"]) == math.ceil(kept / BATCH)
    assert asked["one"] == []
    assert relay.most_in_flight <= 4 + 1  # the workers, and the listing still being read


@pytest.mark.parametrize(
    "part",
    [
        "SINGLE/e+",  # odd names: -x_y=1..2+3, .dotfirst
        "LIKE",  # q2_1 requested; q2X1 and q2_10 unexpected
        "DIS",  # the DIS//NC/18x275 unexpected; two-dataset paths
    ],
)
def test_the_bulk_sweep_equals_the_one_at_a_time_sweep(rucio_server, plan: Plan, part) -> None:
    """Field by field on one detector configuration and part of the paths (the benchmark
    compares the whole campaign: one at a time it takes a minute here)."""
    selection = Selection(frozenset({"epic_craterlake"}), part)
    requests, rejected = requests_of(plan.rows(), selection)
    rucio = Rucio(access(rucio_server))
    common = {"scope": SCOPE, "stage": "RECO", "version": VERSION, "rses": ("BNL-XRD", "EIC-XRD")}
    with ThreadPoolExecutor(8) as pool:
        bulk = sweep(rucio, pool, SCOPE, "RECO", VERSION, requests, selection)
    one = sweep_one_by_one(rucio, SCOPE, "RECO", VERSION, requests, selection)
    docs = [
        document(**common, selection=selection, assignment=a, records=r, rejected=rejected)
        for a, r in (bulk, one)
    ]
    assert docs[0] == docs[1]
    want = [p for p in plan.paths if p.detector_config == "epic_craterlake"]
    want = [p for p in want if p.suffix.startswith(part + "/")]
    assert len(docs[0]["paths"]) == len(want) > 0
    assert [e["status"] for e in docs[0]["paths"]] == [
        p.status for p in sorted(want, key=lambda p: p.suffix)
    ]
    prefix = f"/RECO/{VERSION}/epic_craterlake/{part}/"
    assert [e["datasets"][0]["did"] for e in docs[0]["unexpected"]] == [
        f"{SCOPE}:{u}" for u in plan.unexpected if u.startswith(prefix)
    ]


def test_a_selection_sweeps_only_its_part(make_job, plan: Plan, catalogue: FakeCatalogue, relay):
    job = make_job(catalogue_url=catalogue.server.url, rucio_url=relay.url)
    run(job, campaign=VERSION, detector_configs=["epic_ip6_extended"], path_filter="DIS/NC")
    doc = read(provenance_path(job.cache_dir, VERSION))
    want = [
        p
        for p in plan.paths
        if p.detector_config == "epic_ip6_extended" and p.suffix.startswith("DIS/NC/")
    ]
    assert sorted(by_path(doc)) == sorted((p.detector_config, p.input_path) for p in want)
    assert [e["datasets"][0]["did"] for e in doc["unexpected"]] == []
    assert doc["selection"] == {"detector_configs": ["epic_ip6_extended"], "path_filter": "DIS/NC"}
    [listing] = kinds(relay)["listing"]
    assert f"/RECO/{VERSION}/epic_ip6_extended/*" in listing  # listed for that detector only


def test_a_second_run_with_nothing_changed_rewrites_nothing(
    make_job, plan: Plan, catalogue: FakeCatalogue
) -> None:
    job = make_job(catalogue_url=catalogue.server.url)
    first = run(job, campaign=VERSION)
    path = provenance_path(job.cache_dir, VERSION)
    before = path.stat()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**9))  # a second older
    before = path.stat()
    second = run(job, campaign=VERSION)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert second.data["campaigns"][VERSION]["changed"] is False
    assert second.data["unchanged"] == [VERSION]
    assert (
        second.data["campaigns"][VERSION]["generated_at"]
        == (first.data["campaigns"][VERSION]["generated_at"])
    )
    assert second.data["counts"] == first.data["counts"]
    # a file someone else changed is written again
    doc = read(path)
    doc["counts"]["complete"] += 1
    path.write_text(json.dumps(doc))
    third = run(job, campaign=VERSION)
    assert third.data["campaigns"][VERSION]["changed"] is True and third.data["unchanged"] == []
    assert read(path)["counts"] == plan.counts() and path.stat().st_ino != after.st_ino


def test_rucio_failing_mid_sweep_leaves_the_previous_file_intact(
    make_job, plan: Plan, catalogue: FakeCatalogue, relay: RucioRelay
) -> None:
    job = make_job(catalogue_url=catalogue.server.url, rucio_url=relay.url, parallel=2)
    run(job, campaign=VERSION)
    path = provenance_path(job.cache_dir, VERSION)
    before, content = path.stat(), path.read_bytes()
    catalogue.requested[VERSION] = plan.rows()[:-200]  # the next run would change the file
    relay.fail_from(4)  # login, listing and a couple of bulk requests pass; then 503
    err = failed(job, campaign=VERSION)
    assert err.reason.startswith(f"{VERSION}: Rucio: "), err.reason
    assert err.reason.endswith("previous provenance kept")
    assert "replicas of 100 dataset(s) from epic:/RECO/" in err.reason
    assert "injected by the test relay" in err.reason
    assert kinds(relay)["one"] == []  # no dataset asked on its own after the bulk failed
    assert path.read_bytes() == content
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in provenance_dir(job.cache_dir).iterdir()) == [path.name]
    assert err.data["campaigns"] == {} and err.data["counts"]["complete"] == 0
    # the listing itself failing is the same
    relay.failing_from = None
    relay.fail("/dids/epic/dids/search")
    assert "Rucio: listing epic:/RECO/" in failed(job, campaign=VERSION).reason
    assert path.read_bytes() == content


def test_a_rucio_that_answers_far_more_than_there_is_is_not_believed(
    make_job, plan: Plan, catalogue: FakeCatalogue, relay: RucioRelay
) -> None:
    job = make_job(catalogue_url=catalogue.server.url, rucio_url=relay.url,
                   max_datasets=len(plan.rows()) * 3)
    run(job, campaign=VERSION)
    path = provenance_path(job.cache_dir, VERSION)
    content = path.read_bytes()
    # A listing that names every dataset a hundred times: refused past max_datasets.
    relay.amplify(f"/dids/{SCOPE}/dids/search", 100)
    err = failed(job, campaign=VERSION)
    assert f"more than {len(plan.rows()) * 3} datasets (max_datasets)" in err.reason, err.reason
    assert err.reason.endswith("previous provenance kept")
    assert path.read_bytes() == content
    # One dataset with more replica rows than any real one has.
    relay.amplified.clear()
    relay.amplify("/replicas/datasets_bulk", 1001)
    err = failed(job, campaign=VERSION)
    assert "more than 1000 replica rows for epic:/RECO/" in err.reason, err.reason
    assert path.read_bytes() == content


def test_the_catalogue_failing_leaves_the_previous_file(
    make_job, plan: Plan, catalogue: FakeCatalogue
) -> None:
    job = make_job(catalogue_url=catalogue.server.url, catalogue_tries=1)
    run(job, campaign=VERSION)
    path = provenance_path(job.cache_dir, VERSION)
    content = path.read_bytes()
    catalogue.paths_status = 500
    err = failed(job, campaign=VERSION)
    assert err.reason.startswith(
        f"{VERSION}: catalogue: GET {catalogue.server.url}/pcs/api/requested-paths/"
        f"?campaign={VERSION}: HTTP 500"
    )
    assert path.read_bytes() == content


def test_campaigns_come_from_the_catalogue_and_hostile_ones_name_nothing(
    make_job, plan: Plan, catalogue: FakeCatalogue, tmp_path: Path
) -> None:
    token = f"pwned{uuid.uuid4().hex[:10]}"
    hostile = ["x/../../../state", "../" * 12 + f"tmp/{token}", "*", f"{VERSION}\nforged", 7]
    catalogue.campaigns = [
        {"version": VERSION, "lifecycle": "current"},
        {"version": "20.01.0", "lifecycle": "closed"},
        *({"version": v, "lifecycle": "producing"} for v in hostile),
    ]
    job = make_job(catalogue_url=catalogue.server.url)
    before = set(tmp_path.rglob("*"))
    err = failed(job)
    for version in hostile:
        assert f"{version!r}: not a campaign version like 26.02.0" in err.reason, err.reason
    assert f"{VERSION}:" not in err.reason
    assert set(tmp_path.rglob("*")) - before == {
        job.cache_dir,
        provenance_dir(job.cache_dir),
        provenance_path(job.cache_dir, VERSION),
    }
    assert not list(Path("/tmp").glob(f"{token}*"))
    assert list(err.data["campaigns"]) == [VERSION]
    asked = [r.arg("campaign") for r in catalogue.server.requests if r.arg("campaign")]
    assert set(asked) == {VERSION}
    catalogue.campaigns = [{"version": VERSION, "lifecycle": "closed"}]
    assert failed(job).reason.startswith("no campaign to sweep: the request names none")


def test_a_linked_cache_directory_is_refused_and_a_linked_file_replaced(
    make_job, plan: Plan, catalogue: FakeCatalogue, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = make_job(catalogue_url=catalogue.server.url)
    job.cache_dir.mkdir()
    provenance_dir(job.cache_dir).symlink_to(elsewhere)  # another group member's doing
    err = failed(job, campaign=VERSION)
    assert "provenance: not a directory this capability writes into (a symbolic link)" in (
        err.reason
    )
    assert list(elsewhere.iterdir()) == []
    provenance_dir(job.cache_dir).unlink()
    provenance_dir(job.cache_dir).mkdir()
    target = elsewhere / "victim"
    target.write_text("keep me")
    provenance_path(job.cache_dir, VERSION).symlink_to(target)
    assert run(job, campaign=VERSION).data["campaigns"][VERSION]["changed"] is True
    assert target.read_text() == "keep me"
    assert not provenance_path(job.cache_dir, VERSION).is_symlink()


def test_no_catalogue_or_no_rucio_fails_before_touching_anything(make_job, rucio_server) -> None:
    err = failed(make_job(), campaign=VERSION)
    assert err.reason.startswith("the requested paths come from the catalogue")
    err = failed(make_job(catalogue_url="http://127.0.0.1:9", password="wrong"), campaign=VERSION)
    assert "cannot log in" in err.reason and "wrong" not in err.reason
    job = make_job(catalogue_url="https://catalogue.example")
    assert "[capability.campaign_provenance_sweep] catalogue_tls_verify" in failed(job).reason


def test_through_the_host_one_event(
    opsagent_harness,
    plan: Plan,
    rucio_server,
    catalogue: FakeCatalogue,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import opsagent_campaign_provenance as plugin

    (tmp_path / "h0").mkdir(exist_ok=True)  # the harness writes its config there
    monkeypatch.setenv("TEST_RUCIO_PASSWORD", rucio_server["RUCIO_TEST_PASSWORD"])
    h = opsagent_harness(
        modules=[plugin],
        config={
            "credentials.rucio_userpass": {"env": "TEST_RUCIO_PASSWORD"},
            "capability.campaign_provenance_sweep": {
                "rucio_url": rucio_server["RUCIO_TEST_URL"],
                "rucio_account": rucio_server["RUCIO_TEST_ACCOUNT"],
                "rucio_username": rucio_server["RUCIO_TEST_USERNAME"],
                "catalogue_url": catalogue.server.url,
            },
        },
    )
    ok = h.send(
        "campaign_provenance_sweep", {"campaign": VERSION, "created_by": "ann"}, timeout=120
    )
    assert ok["msg_type"] == "provenance_ready" and ok["ok"] is True, ok.get("error")
    assert ok["counts"] == plan.counts() and ok["campaign"] == VERSION
    assert ok["created_by"] == "ann" and ok["unchanged"] == []
    again = h.send("campaign_provenance_sweep", {"campaign": VERSION}, timeout=120)
    assert again["ok"] is True and again["unchanged"] == [VERSION]
    catalogue.paths_status = 400
    bad = h.send("campaign_provenance_sweep", {"campaign": VERSION}, timeout=120)
    assert bad["msg_type"] == "provenance_ready" and bad["ok"] is False
    assert bad["error"].startswith(f"{VERSION}: catalogue: GET ")
    refused = h.send("campaign_provenance_sweep", {"campaign": "../etc"}, timeout=30)
    assert refused["msg_type"] == "request_rejected"
    assert "$.campaign: expected a campaign version like 26.02.0, got '../etc'" in str(refused)
    h.join()
