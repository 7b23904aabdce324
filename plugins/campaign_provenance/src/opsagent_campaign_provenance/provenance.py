"""The join: RECO datasets onto requested paths, each path's status, the cache document.

Pure functions over what Rucio and the catalogue said; no I/O.  Rucio's answers are
data: a name is only compared and copied, a number that is not a non-negative integer
counts as unknown (0 files), so hostile content can make a status wrong but never
crash the sweep or name a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from opsagent_campaign_provenance.requested import SHOWN_REJECTIONS, Requested, Selection

SCHEMA_VERSION = 1
STATUSES = ("complete", "partial", "missing", "unexpected")


def stage_prefix(stage: str, version: str) -> str:
    return f"/{stage}/{version}/"


@attrs.define
class Assignment:
    """Which listed datasets belong to which request, and which to none."""

    requested: dict[Requested, list[str]]
    unexpected: list[str] = attrs.Factory(list)

    @classmethod
    def empty(cls, requests: Iterable[Requested]) -> Assignment:
        return cls({r: [] for r in requests})

    def place(self, name: str, prefix: str, selection: Selection) -> bool:
        """Put dataset ``name`` (already known to start with ``prefix``) where it belongs.

        A dataset belongs to the request with its detector configuration and the
        longest suffix that is a whole-segment leading part of its own: the request
        ``DIS/NC/18x275`` takes ``.../DIS/NC/18x275`` and ``.../DIS/NC/18x275/part2``.
        One outside the selection is ignored.  Returns whether it was kept.
        """
        detector, _, tail = name[len(prefix) :].partition("/")
        segments = tail.split("/")
        for k in range(len(segments), 0, -1):
            got = self.requested.get(Requested(detector, "/".join(segments[:k])))
            if got is not None:
                got.append(name)
                return True
        if not selection.takes(detector, tail):
            return False
        self.unexpected.append(name)
        return True


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def dataset_entry(record: dict[str, Any]) -> dict[str, Any]:
    """One dataset as the cache shows it, from its snapshot-style record."""
    replicas = [r for r in record.get("rse_replicas") or [] if isinstance(r, dict)]
    lengths = [n for n in (_count(r.get("length")) for r in replicas) if n is not None]
    files = _count(record.get("length"))
    if files is None:
        files = max(lengths, default=0)  # open datasets: the per-RSE records are the truth
    size = _count(record.get("bytes"))
    if size is None:
        size = max(
            (n for n in (_count(r.get("bytes")) for r in replicas) if n is not None), default=0
        )
    return {
        "did": record["did"],
        "files": files,
        "bytes": size,
        "rses": sorted(
            (
                {
                    "rse": str(r.get("rse")),
                    "files": _count(r.get("available_length")) or 0,
                    "total": _count(r.get("length")) or 0,
                    "state": None if r.get("state") is None else str(r.get("state")),
                }
                for r in replicas
            ),
            key=lambda e: e["rse"],
        ),
    }


def _available(entry: dict[str, Any], rse: str) -> int:
    return sum(r["files"] for r in entry["rses"] if r["rse"] == rse)


def status_of(datasets: list[dict[str, Any]], rses: tuple[str, ...]) -> str:
    """``complete``: there are datasets, each has files and all of them on every RSE;
    ``missing``: not one file of them on any of the RSEs; else ``partial``."""
    if not any(_available(d, rse) for d in datasets for rse in rses):
        return "missing"
    if all(
        d["files"] > 0 and all(_available(d, rse) == d["files"] for rse in rses) for d in datasets
    ):
        return "complete"
    return "partial"


def path_entry(
    detector: str,
    suffix: str | None,
    datasets: list[dict[str, Any]],
    rses: tuple[str, ...],
    status: str,
) -> dict[str, Any]:
    files = sum(d["files"] for d in datasets)
    per_rse = []
    for rse in rses:
        on = sum(min(_available(d, rse), d["files"]) for d in datasets)
        per_rse.append({"rse": rse, "files": on, "complete": files > 0 and on == files})
    return {
        "input_path": None if suffix is None else Requested(detector, suffix).input_path,
        "detector_config": detector,
        "status": status,
        "files": files,
        "bytes": sum(d["bytes"] for d in datasets),
        "rses": per_rse,
        "datasets": sorted(datasets, key=lambda d: d["did"]),
    }


def document(
    *,
    scope: str,
    stage: str,
    version: str,
    rses: tuple[str, ...],
    selection: Selection,
    assignment: Assignment,
    records: dict[str, dict[str, Any]],
    rejected: list[str],
) -> dict[str, Any]:
    """The cache document of one campaign, without ``generated_at`` (added on write).

    ``records`` maps each assigned dataset's DID to its snapshot-style record.
    """
    prefix = stage_prefix(stage, version)

    def entries(names: list[str]) -> list[dict[str, Any]]:
        return [dataset_entry(records[f"{scope}:{n}"]) for n in names]

    paths = []
    for req in sorted(assignment.requested):
        ds = entries(assignment.requested[req])
        paths.append(path_entry(req.detector_config, req.suffix, ds, rses, status_of(ds, rses)))
    unexpected = [
        path_entry(name[len(prefix) :].partition("/")[0], None, entries([name]), rses, "unexpected")
        for name in sorted(assignment.unexpected)
    ]
    counts = dict.fromkeys(STATUSES, 0)
    for p in paths:
        counts[p["status"]] += 1
    counts["unexpected"] = len(unexpected)
    return {
        "schema_version": SCHEMA_VERSION,
        "campaign": version,
        "scope": scope,
        "stage": stage,
        "rses": list(rses),
        "selection": selection.as_dict(),
        "counts": counts,
        "rejected": {"count": len(rejected), "first": rejected[:SHOWN_REJECTIONS]},
        "paths": paths,
        "unexpected": unexpected,
    }
