"""A campaign for the provenance sweep: requested EVGEN paths and the RECO Rucio made of them.

``plan(version, count)`` decides, for ``count`` requested paths over two detector
configurations, what was produced for each and so which status the sweep must find
(the status is stated here by kind, not computed by the code under test):

- complete: every file on BNL-XRD and EIC-XRD, with one dataset or two (the path's own
  and one beneath it, ``.../part2``);
- partial: a file missing on EIC-XRD, no EIC-XRD replica at all, only EIC-XRD, or the
  second dataset only on BNL-XRD;
- missing: no dataset, a dataset without files, or files only on JLAB-DISK;

plus RECO datasets nobody requested (``unexpected``), DIDs with odd but legal names
(``..`` segments, ``//``, ``+``/``=``/``_`` in segments, a name of 200+ characters, a
``_`` that SQL LIKE would take for any character), a FULL dataset the RECO sweep must
not see, and catalogue rows a hostile catalogue might send.

The datasets are made by ``rucio_snapshot``'s seeder (bulk requests, counters by the
server's own daemon); also runnable: ``python provenance_seed.py <version> [count]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "rucio_snapshot" / "tests"))

from rucio_seed import (  # noqa: E402
    DETECTORS,
    Layout,
    admin_client,
    physics_paths,
    seed_layout,
    services_dir,
)

#: The seeded campaign of the tests (a version no other test or benchmark uses).
VERSION = "27.04.0"
EVGEN = "/volatile/eic/EPIC/EVGEN/"
REQUESTED = 1040
BOTH = {"BNL-XRD": None, "EIC-XRD": None}


@attrs.frozen
class Planned:
    """One requested path, the datasets seeded for it and the status they make."""

    detector_config: str
    suffix: str
    status: str
    datasets: tuple[str, ...]

    @property
    def input_path(self) -> str:
        return EVGEN + self.suffix

    def row(self, task: str) -> dict[str, Any]:
        return {
            "input_path": self.input_path,
            "detector_config": self.detector_config,
            "task": task,
        }


@attrs.frozen
class Plan:
    version: str
    paths: list[Planned]
    layout: list[Layout]
    #: RECO datasets with no request, by name.
    unexpected: list[str]
    #: Catalogue rows that must be rejected, and the number of duplicate rows.
    hostile_rows: list[Any]
    duplicates: int

    def rows(self) -> list[Any]:
        good = [p.row(f"task-{i:04d}") for i, p in enumerate(self.paths)]
        return good[:50] + self.hostile_rows + good[50:] + good[: self.duplicates]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("complete", "partial", "missing"), 0)
        for p in self.paths:
            out[p.status] += 1
        return {**out, "unexpected": len(self.unexpected)}


def _full(files: int) -> dict[str, int]:
    return {"BNL-XRD": files, "EIC-XRD": files}


def _path(i: int, version: str, cfg: str, suffix: str, kind: int) -> tuple[Planned, list[Layout]]:
    base = f"/RECO/{version}/{cfg}/{suffix}"
    f = 3 if i % 3 == 0 else 2
    closed = i % 7 == 0
    one: dict[int, tuple[str, dict[str, int]]] = {
        0: ("complete", _full(f)),
        1: ("complete", _full(f)),
        2: ("complete", _full(f)),
        8: ("complete", _full(f)),
        9: ("complete", _full(f)),
        10: ("complete", _full(f)),
        3: ("partial", {"BNL-XRD": f, "EIC-XRD": 1}),
        11: ("partial", {"BNL-XRD": f, "EIC-XRD": f - 1}),
        4: ("partial", {"BNL-XRD": f, "JLAB-DISK": f}),
        12: ("partial", {"EIC-XRD": f}),
        14: ("missing", {"JLAB-DISK": f}),
    }
    if kind in one:
        status, at = one[kind]
        return Planned(cfg, suffix, status, (base,)), [Layout(base, f, at, closed)]
    if kind in (5, 13):
        return Planned(cfg, suffix, "missing", ()), []
    if kind == 6:
        return Planned(cfg, suffix, "missing", (base,)), [Layout(base, 0, {}, closed)]
    child = f"{base}/part2"
    second = _full(f) if kind == 7 else {"BNL-XRD": f}
    return (
        Planned(cfg, suffix, "complete" if kind == 7 else "partial", (base, child)),
        [Layout(base, f, _full(f), closed), Layout(child, f, second, False)],
    )


ODD_REQUESTED = [
    # (suffix, complete?) -- odd but legal: every character Rucio allows in a name
    ("SINGLE/e+/1GeV/-x_y=1..2+3", True),
    ("LIKE/q2_1", True),  # SQL LIKE reads "_" as any character: q2X1 must not join it
    ("/".join(["LONG"] + [f"segment{k:02d}_with=odd+chars..v{k}" for k in range(7)]), True),
    ("SINGLE/e+/1GeV/.dotfirst", False),
]


def _odd(version: str) -> tuple[list[Planned], list[Layout], list[str]]:
    paths, layouts = [], []
    cfg = DETECTORS[0]
    for suffix, complete in ODD_REQUESTED:
        name = f"/RECO/{version}/{cfg}/{suffix}"
        at = _full(2) if complete else {"BNL-XRD": 2}
        paths.append(Planned(cfg, suffix, "complete" if complete else "partial", (name,)))
        layouts.append(Layout(name, 2, at, False))
    unexpected = [
        f"/RECO/{version}/{cfg}/LIKE/q2X1",
        f"/RECO/{version}/{cfg}/LIKE/q2_10",  # not beneath LIKE/q2_1: a segment is whole
        f"/RECO/{version}/{cfg}/../../../etc/passwd",
        f"/RECO/{version}/{cfg}/DIS//NC/18x275",
        f"/RECO/{version}/..hidden_cfg/x=1+2",
        f"/RECO/{version}/{cfg}",
    ]
    layouts += [Layout(n, 1, {"BNL-XRD": 1}, False) for n in unexpected]
    return paths, layouts, unexpected


HOSTILE_ROWS: list[Any] = [
    {"input_path": EVGEN + "../../../etc", "detector_config": DETECTORS[0]},
    {"input_path": EVGEN + "DIS/*", "detector_config": DETECTORS[0]},
    {"input_path": EVGEN + "DIS/NC%", "detector_config": DETECTORS[0]},
    {"input_path": EVGEN + "DIS//NC/18x275", "detector_config": DETECTORS[0]},
    {"input_path": EVGEN + "DIS/NC\nforged", "detector_config": DETECTORS[0]},
    {"input_path": "/etc/passwd", "detector_config": DETECTORS[0]},
    {"input_path": EVGEN + "DIS/NC/18x275", "detector_config": "../x"},
    {"input_path": 5, "detector_config": DETECTORS[0]},
    {"detector_config": DETECTORS[0]},
    {"input_path": EVGEN + "DIS/NC/18x275"},
]


def plan(version: str, count: int = REQUESTED) -> Plan:
    base_paths = list(physics_paths())
    paths: list[Planned] = []
    layouts: list[Layout] = []
    unexpected: list[str] = []
    for i in range(count):
        cfg = DETECTORS[i % 2]
        k = i // 2
        suffix = f"{base_paths[k % len(base_paths)]}/r{k // len(base_paths):02d}"
        planned, made = _path(i, version, cfg, suffix, kind=i % 16)
        paths.append(planned)
        layouts += made
        if i % 20 == 0:
            extra = f"/RECO/{version}/{cfg}/UNREQUESTED/{suffix}"
            unexpected.append(extra)
            layouts.append(Layout(extra, 2, {"BNL-XRD": 2}, False))
    odd_paths, odd_layouts, odd_unexpected = _odd(version)
    paths += odd_paths
    layouts += odd_layouts
    unexpected += odd_unexpected
    # Another stage: the RECO sweep must not see it.
    layouts.append(Layout(f"/FULL/{version}/{DETECTORS[0]}/{paths[0].suffix}", 2, _full(2), False))
    return Plan(version, paths, layouts, sorted(unexpected), HOSTILE_ROWS, duplicates=3)


def seed(client: Any, version: str, count: int = REQUESTED) -> Plan:
    """Seed the campaign (once: a seeded campaign is left alone); returns its plan."""
    p = plan(version, count)
    seed_layout(client, version, p.layout)
    return p


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
    seed(c, sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else REQUESTED)
