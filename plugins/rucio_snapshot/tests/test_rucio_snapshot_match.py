"""The matcher as tables: what a name says, what a task asks, and whether they meet."""

from __future__ import annotations

import math

import pytest
from opsagent_rucio_snapshot.match import (
    Filters,
    dataset_filters,
    match_snapshot,
    matches,
    output_entry,
    q2_range,
    task_filters,
)

V = "/RECO/26.02.0"


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            f"{V}/epic_craterlake/DIS/NC/18x275/minQ2=10",
            Filters("epic_craterlake", "18x275", "NC", "minQ2=10"),
        ),
        (
            f"{V}/epic_craterlake/DIS/CC/10x100/minQ2=1000",
            Filters("epic_craterlake", "10x100", "CC", "minQ2=1000"),
        ),
        (
            f"{V}/epic_craterlake/SIDIS/pythia6-eic/1.0.0/10x100/q2_1to100",
            Filters("epic_craterlake", "10x100", "SIDIS", "q2_1to100"),
        ),
        (
            f"{V}/epic_craterlake/DDIS/rapgap_3.310/18x275/q2_1_10",
            Filters("epic_craterlake", "18x275", "DDIS", "q2_1_10"),
        ),
        (
            f"{V}/epic_craterlake/EXCLUSIVE/DVCS_ABCONV/5x41/q2_5",
            Filters("epic_craterlake", "5x41", "EXCLUSIVE", "q2_5"),
        ),
        (
            f"{V}/epic_craterlake/EXCLUSIVE/DVCS/5x41/q2_1_to_10",
            Filters("epic_craterlake", "5x41", "EXCLUSIVE", "q2_1_to_10"),
        ),
        # missing Q² label
        (
            f"{V}/epic_ip6_extended/EXCLUSIVE/TCS_ABCONV/5x41/hel_minus",
            Filters("epic_ip6_extended", "5x41", "EXCLUSIVE", None),
        ),
        # segments before the physics path
        (
            f"{V}/epic_craterlake/Bkg_1SignalPer2usFrame/Nov2025/DIS/NC/5x100/minQ2=10",
            Filters("epic_craterlake", "5x100", "NC", "minQ2=10"),
        ),
        # labels inside a file-like segment; the first of each wins
        (
            f"{V}/epic_craterlake/DIS/NC/10x275/minQ2=100/pythia8NCDIS_18x275_minQ2=1_beamEffects",
            Filters("epic_craterlake", "10x275", "NC", "minQ2=100"),
        ),
        # SINGLE: species and energy are the next two segments
        (
            f"{V}/epic_craterlake/SINGLE/pi+/10GeV/45to135deg",
            Filters("epic_craterlake", None, "SINGLE", None, "pi+", "10GeV"),
        ),
        (f"{V}/epic_craterlake/SINGLE/e-", Filters("epic_craterlake", None, "SINGLE", None, "e-")),
        # elsewhere the energy is the first token with a unit
        (
            f"{V}/epic_craterlake/BACKGROUNDS/beamgas/proton/GETaLM1.0.0/275GeV",
            Filters("epic_craterlake", None, "BACKGROUNDS", None, None, "275GeV"),
        ),
        (
            f"{V}/epic_craterlake/BACKGROUNDS/synrad/bgs_1ms",
            Filters("epic_craterlake", None, "BACKGROUNDS"),
        ),
        # DIS without NC/CC stays DIS; lookalikes inside a token are not labels
        (
            f"{V}/epic_craterlake/DIS/run118x2750/xminQ2=5/q2_7",
            Filters("epic_craterlake", None, "DIS", "q2_7"),
        ),
        # no physics category at all
        (f"{V}/epic_craterlake/calibration/18x275", Filters("epic_craterlake", "18x275")),
        ("/RECO/26.02.0", Filters()),
    ],
)
def test_dataset_name_gives_filters(name: str, expected: Filters) -> None:
    assert dataset_filters(name) == expected


@pytest.mark.parametrize(
    "label, expected",
    [
        ("minQ2=10", (10.0, math.inf)),
        ("minQ2=0.5", (0.5, math.inf)),
        ("q2_1to100", (1.0, 100.0)),
        ("q2_1_to_100", (1.0, 100.0)),
        ("q2_10_100", (10.0, 100.0)),
        ("q2_5", (5.0, 5.0)),
        ("Q2_5", (5.0, 5.0)),
        ("hel_minus", None),
        ("minQ2=", None),
        ("10", None),
    ],
)
def test_q2_labels_are_ranges(label: str, expected: tuple[float, float] | None) -> None:
    assert q2_range(label) == expected


def test_task_filters_stored_win_and_the_rest_comes_from_the_input_path() -> None:
    task = {
        "name": "t",
        "detector_config": "epic_craterlake",
        "input_path": "/volatile/eic/EPIC/EVGEN/DIS/NC/18x275/minQ2=10/file_5x41.hepmc3",
        "filters": {"beam": "5x100", "q2": ""},
    }
    assert task_filters(task) == Filters("epic_craterlake", "5x100", "NC", "minQ2=10")


def test_task_detector_comes_from_its_configuration_never_from_the_path() -> None:
    task = {"name": "t", "input_path": "/volatile/eic/EPIC/EVGEN/epic_other/SINGLE/e-/1GeV"}
    assert task_filters(task) == Filters(None, None, "SINGLE", None, "e-", "1GeV")
    assert (
        task_filters({**task, "detector_config": "epic_craterlake"}).detector == "epic_craterlake"
    )
    assert (
        task_filters({**task, "filters": {"detector": "d1"}, "detector_config": "d2"}).detector
        == "d1"
    )


def test_task_without_path_or_filters_has_none() -> None:
    assert task_filters({"name": "t", "input_path": "/somewhere/else"}) == Filters()


NC = f"{V}/epic_craterlake/DIS/NC/18x275/minQ2=10"


@pytest.mark.parametrize(
    "task, name, expected",
    [
        (Filters(beam="18x275", physics="NC"), NC, True),
        (Filters("epic_craterlake", "18x275", "NC", "minQ2=10"), NC, True),
        (Filters("epic_ip6_extended", "18x275", "NC"), NC, False),  # detector differs
        (Filters(beam="10x100", physics="NC"), NC, False),  # beam differs
        (Filters(beam="18x275", physics="DIS"), NC, False),  # NC is not DIS
        (Filters(beam="18x275", physics="CC"), NC, False),
        (Filters(physics="NC"), NC, True),  # task without beam: any beam
        (Filters(beam="18x275"), NC, True),  # task without physics: any physics
        (Filters(q2="minQ2=10"), NC, False),  # neither beam nor physics: matches nothing
        (Filters(), NC, False),
        # a task value with no dataset value fails
        (Filters(beam="18x275", physics="SINGLE"), f"{V}/d/SINGLE/e-/1GeV", False),
        (Filters(physics="SINGLE", beam="18x275"), f"{V}/d/SINGLE/e-/1GeV/18x275", True),
        # Q² ranges overlap (closed intervals; open-ended minQ2)
        (Filters(physics="NC", q2="q2_1to10"), NC, True),  # [1,10] meets [10,inf)
        (Filters(physics="NC", q2="q2_1to9.5"), NC, False),
        (Filters(physics="NC", q2="minQ2=1000"), NC, True),
        (Filters(physics="NC", q2="q2_100"), NC, True),
        (Filters(physics="SIDIS", q2="q2_1_10"), f"{V}/d/SIDIS/p/10x100/q2_10_100", True),
        (Filters(physics="SIDIS", q2="q2_1_10"), f"{V}/d/SIDIS/p/10x100/q2_11_100", False),
        (Filters(physics="SIDIS", q2="q2_5"), f"{V}/d/SIDIS/p/10x100/q2_1to100", True),
        (Filters(physics="SIDIS", q2="q2_5"), f"{V}/d/SIDIS/p/10x100/q2_6", False),
        # a missing label on either side does not block
        (Filters(physics="EXCLUSIVE", q2="q2_5"), f"{V}/d/EXCLUSIVE/TCS/5x41/hel_minus", True),
        (Filters(physics="NC"), NC, True),
        # unparseable labels must be equal as strings
        (Filters(physics="EXCLUSIVE", q2="hel_minus"), f"{V}/d/EXCLUSIVE/DVCS/5x41/q2_5", False),
        (Filters(physics="EXCLUSIVE", q2="hel_minus"), f"{V}/d/EXCLUSIVE/TCS/5x41/hel_minus", True),
        # species and energy agree where both are set; energies compare by value
        (Filters(physics="SINGLE", species="pi+", energy="10GeV"), f"{V}/d/SINGLE/pi+/10GeV", True),
        (Filters(physics="SINGLE", species="pi+"), f"{V}/d/SINGLE/pi-/10GeV", False),
        (Filters(physics="SINGLE", energy="1GeV"), f"{V}/d/SINGLE/pi+/1000MeV/x", True),
        (Filters(physics="SINGLE", energy="1GeV"), f"{V}/d/SINGLE/pi+/100MeV/x", False),
        (Filters(physics="SINGLE", energy="1GeV"), f"{V}/d/SINGLE/pi+", True),
        (Filters(physics="BACKGROUNDS", energy="275GeV"), f"{V}/d/BACKGROUNDS/bg/p/100GeV", False),
        (Filters(physics="BACKGROUNDS", energy="275GeV"), f"{V}/d/BACKGROUNDS/synrad/x", True),
    ],
)
def test_matching_rules(task: Filters, name: str, expected: bool) -> None:
    assert matches(task, dataset_filters(name)) is expected


def _dataset(
    name: str,
    length: int | None,
    nbytes: int | None,
    replicas: list[tuple[str, int | None, int | None, int | None]],
    error: str | None = None,
) -> dict:
    d = {
        "did": f"epic:{name}",
        "length": length,
        "bytes": nbytes,
        "rse_replicas": [
            {
                "rse": r,
                "length": n,
                "available_length": a,
                "bytes": b,
                "available_bytes": b,
                "state": "AVAILABLE",
            }
            for r, n, a, b in replicas
        ],
    }
    if error:
        d["error"] = error
    return d


def test_output_entry_takes_per_rse_counts_when_the_dataset_has_none() -> None:
    ds = _dataset(NC, None, None, [("BNL-XRD", 3, 3, 300), ("EIC-XRD", 3, 1, 300)])
    entry = output_entry(ds, "RECO", "26.02.0", "2026-06-03T10:12:00+0000")
    assert entry == {
        "did": f"epic:{NC}",
        "stage": "RECO",
        "version": "26.02.0",
        "filters": {
            "detector": "epic_craterlake",
            "beam": "18x275",
            "physics": "NC",
            "q2": "minQ2=10",
            "species": None,
            "energy": None,
        },
        "rses": [
            {"rse": "BNL-XRD", "files": 3, "total": 3, "complete": True},
            {"rse": "EIC-XRD", "files": 1, "total": 3, "complete": False},
        ],
        "file_count": 3,
        "bytes": 300,
        "complete": False,
        "checked_at": "2026-06-03T10:12:00+0000",
    }


def test_output_entry_completeness() -> None:
    def entry(*reps, length=None):
        return output_entry(_dataset(NC, length, None, list(reps)), "RECO", "v", "t")

    assert entry(("A", 2, 2, 1), ("B", 2, 2, 1))["complete"] is True
    assert entry()["complete"] is False  # no RSE at all
    assert entry()["file_count"] is None
    assert entry(("A", 0, 0, 0))["rses"][0]["complete"] is False  # empty is not complete
    assert entry(("A", None, None, None))["rses"][0] == {
        "rse": "A",
        "files": 0,
        "total": 0,
        "complete": False,
    }
    assert entry(("A", 2, 2, 1), length=5)["file_count"] == 5  # the dataset's own wins


def test_match_snapshot_replaces_outputs_and_lists_the_unmatched() -> None:
    cc = f"{V}/epic_craterlake/DIS/CC/18x275/minQ2=100"
    full_nc = NC.replace("/RECO/", "/FULL/")
    snapshot = {
        "fetched_at": "T",
        "scope": "epic",
        "campaign_name": "26.02.0",
        "campaigns": {
            "/RECO/26.02.0": {
                "count": 2,
                "datasets": [
                    _dataset(NC, 2, 20, [("BNL-XRD", 2, 2, 20)]),
                    _dataset(cc, None, None, [], error="RucioException: boom"),
                ],
            },
            "/FULL/26.02.0": {"count": 1, "datasets": [_dataset(full_nc, 2, 20, [])]},
        },
    }
    tasks = [
        {"name": "nc", "filters": {"physics": "NC", "beam": "18x275"}},
        {"name": "any-18x275", "filters": {"beam": "18x275", "q2": "minQ2=10"}},
        {"name": "nothing", "filters": {"physics": "SINGLE"}},
    ]
    m = match_snapshot(snapshot, tasks)
    assert [e["did"] for e in m.outputs["nc"]] == [f"epic:{full_nc}", f"epic:{NC}"]
    assert [e["stage"] for e in m.outputs["nc"]] == ["FULL", "RECO"]
    assert [e["did"] for e in m.outputs["any-18x275"]] == [
        f"epic:{full_nc}",
        f"epic:{cc}",
        f"epic:{NC}",
    ]
    assert m.outputs["any-18x275"][1]["error"] == "RucioException: boom"
    assert m.outputs["nothing"] == []
    assert m.unmatched == []

    m = match_snapshot(snapshot, tasks[:1])
    assert m.unmatched == [
        {
            "did": f"epic:{cc}",
            "stage": "RECO",
            "files": None,
            "bytes": None,
            "rses": [],
            "filters": dataset_filters(cc).as_dict(),
            "error": "RucioException: boom",
        }
    ]
