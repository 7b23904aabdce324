"""The campaigns and requested tasks the tests use (shared by conftest and the tests)."""

from __future__ import annotations

from typing import Any

CURRENT = "26.02.0"
LAST = "25.12.0"
LAST_SIZE = 24

#: Requested tasks of the current campaign, one per matching rule (see test_*_rucio.py).
TASKS: list[dict[str, Any]] = [
    {
        "name": "nc-18x275-minq2-10",
        "campaign": CURRENT,
        "detector_config": "epic_craterlake",
        "input_path": "/volatile/eic/EPIC/EVGEN/DIS/NC/18x275/minQ2=10",
        "overrides": {"nevents": 1000, "outputs": [{"did": "epic:/stale", "stage": "RECO"}]},
    },
    {
        "name": "cc-10x100",
        "campaign": CURRENT,
        "detector_config": "epic_craterlake",
        "filters": {"physics": "CC", "beam": "10x100", "q2": "minQ2=100"},
    },
    {
        "name": "sidis-10x100-q2-1to10",
        "campaign": CURRENT,
        "detector_config": "epic_craterlake",
        "filters": {"physics": "SIDIS", "beam": "10x100", "q2": "q2_1to10"},
    },
    {
        "name": "single-pi-10gev",
        "campaign": CURRENT,
        "detector_config": "epic_ip6_extended",
        "filters": {"physics": "SINGLE", "species": "pi+", "energy": "10GeV"},
    },
    {
        "name": "ddis-18x275-q2-5",
        "campaign": CURRENT,
        "detector_config": "epic_craterlake",
        "filters": {"physics": "DDIS", "beam": "18x275", "q2": "q2_5"},
    },
    {
        "name": "tcs-5x41-label",
        "campaign": CURRENT,
        "filters": {"physics": "EXCLUSIVE", "beam": "5x41", "q2": "hel_minus"},
    },
    {"name": "dis-plain", "campaign": CURRENT, "filters": {"physics": "DIS"}},
    {"name": "no-beam-no-physics", "campaign": CURRENT, "filters": {"q2": "minQ2=10"}},
    {"name": "last-campaign-task", "campaign": LAST, "filters": {"physics": "NC"}},
]
CAMPAIGNS = [
    {"version": CURRENT, "lifecycle": "current"},
    {"version": LAST, "lifecycle": "last"},
    {"version": "25.10.0", "lifecycle": "closed"},
]
