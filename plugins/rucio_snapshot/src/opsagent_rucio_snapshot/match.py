"""Which produced dataset belongs to which requested task: pure functions, no I/O.

A dataset name is ``/<stage>/<version>/<detector>/<physics path...>``; a task carries
request filters, stored with it in the catalogue or derivable from its EVGEN input path.
Both sides are reduced to the same :class:`Filters` and compared with :func:`matches`.
The rules are those of the spec (``RUCIO_SNAPSHOT.md``); ``docs/rucio_snapshot.md``
repeats them with examples.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

PHYSICS = ("DIS", "SIDIS", "DDIS", "EXCLUSIVE", "SINGLE", "BACKGROUNDS")
FILTER_KEYS = ("detector", "beam", "physics", "q2", "species", "energy")
EVGEN_MARK = "/EVGEN/"

# Labels are whole tokens: they start a path segment or follow '_', and end at a
# segment end, '_' or '.', so 'pythia8NCDIS_18x275_minQ2=10_beamEffects' still yields
# beam 18x275 and minQ2=10 while 'run118x2750' yields nothing.
_START = r"(?:^|(?<=[/_]))"
_END = r"(?=$|[/_.])"
_NUM = r"[0-9]+(?:\.[0-9]+)?"
_BEAM = re.compile(_START + r"([0-9]+x[0-9]+)" + _END)
_Q2 = re.compile(
    _START
    + rf"((?i:minQ2=)(?P<min>{_NUM})"
    + rf"|(?i:q2_)(?P<a1>{_NUM})to(?P<b1>{_NUM})"
    + rf"|(?i:q2_)(?P<a2>{_NUM})_to_(?P<b2>{_NUM})"
    + rf"|(?i:q2_)(?P<a3>{_NUM})_(?P<b3>{_NUM})"
    + rf"|(?i:q2_)(?P<n>{_NUM}))"
    + _END
)
_ENERGY = re.compile(_START + rf"(({_NUM})(eV|keV|MeV|GeV|TeV))" + _END)
_ENERGY_WHOLE = re.compile(rf"({_NUM})\s*(eV|keV|MeV|GeV|TeV)")
_UNIT = {"eV": 1.0, "keV": 1e3, "MeV": 1e6, "GeV": 1e9, "TeV": 1e12}


@attrs.frozen
class Filters:
    """The request filters of a task or the filters read from a dataset name; None: absent."""

    detector: str | None = None
    beam: str | None = None
    physics: str | None = None
    q2: str | None = None
    species: str | None = None
    energy: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return attrs.asdict(self)


def physics_filters(path: str) -> Filters:
    """Filters of a physics path (everything after the detector, or after ``/EVGEN/``)."""
    segments = [s for s in path.split("/") if s]
    rest = "/".join(segments)
    beam = _BEAM.search(rest)
    q2 = _Q2.search(rest)
    physics = species = energy = None
    for i, seg in enumerate(segments):
        if seg in PHYSICS:
            physics = seg
            if seg == "DIS":
                flavour = next((s for s in segments if s in ("NC", "CC")), None)
                physics = flavour or seg
            elif seg == "SINGLE":
                species = segments[i + 1] if i + 1 < len(segments) else None
                energy = segments[i + 2] if i + 2 < len(segments) else None
            break
    if physics != "SINGLE":
        found = _ENERGY.search(rest)
        energy = found.group(1) if found else None
    return Filters(
        beam=beam.group(1) if beam else None,
        q2=q2.group(1) if q2 else None,
        physics=physics,
        species=species,
        energy=energy,
    )


def dataset_filters(name: str) -> Filters:
    """Filters of a dataset name ``/<stage>/<version>/<detector>/<rest...>``."""
    segments = name.split("/")
    detector = segments[3] if len(segments) > 3 and segments[3] else None
    rest = "/".join(segments[4:])
    return attrs.evolve(physics_filters(rest), detector=detector)


def task_filters(task: Mapping[str, Any]) -> Filters:
    """A task's request filters: stored ``filters`` win, the rest comes from ``input_path``.

    The detector is never read from the input path (EVGEN paths have none): it is
    ``filters.detector`` or else the task's ``detector_config``.
    """
    stored = task.get("filters") or {}
    derived = Filters()
    path = task.get("input_path") or ""
    if isinstance(path, str) and EVGEN_MARK in path:
        derived = physics_filters(path.split(EVGEN_MARK, 1)[1])
    values: dict[str, str | None] = {}
    for key in FILTER_KEYS:
        value = stored.get(key) if isinstance(stored, Mapping) else None
        if value in (None, ""):
            value = getattr(derived, key)
        values[key] = None if value in (None, "") else str(value)
    if values["detector"] is None and task.get("detector_config"):
        values["detector"] = str(task["detector_config"])
    return Filters(**values)


def q2_range(label: str) -> tuple[float, float] | None:
    """``minQ2=a`` is [a, inf); ``q2_atob``, ``q2_a_to_b``, ``q2_a_b`` are [a, b];
    ``q2_n`` is [n, n]; anything else is None (compared as a string)."""
    found = _Q2.fullmatch(label)
    if not found:
        return None
    g = found.groupdict()
    if g["min"] is not None:
        return (float(g["min"]), math.inf)
    for a, b in (("a1", "b1"), ("a2", "b2"), ("a3", "b3")):
        if g[a] is not None:
            return (float(g[a]), float(g[b]))
    n = float(g["n"])
    return (n, n)


def q2_compatible(task_q2: str | None, dataset_q2: str | None) -> bool:
    if task_q2 is None or dataset_q2 is None:
        return True
    t, d = q2_range(task_q2), q2_range(dataset_q2)
    if t is None or d is None:
        return task_q2 == dataset_q2
    return t[0] <= d[1] and d[0] <= t[1]


def _energy_value(label: str) -> float | None:
    found = _ENERGY_WHOLE.fullmatch(label.strip())
    return float(found.group(1)) * _UNIT[found.group(2)] if found else None


def energy_compatible(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return True
    va, vb = _energy_value(a), _energy_value(b)
    if va is None or vb is None:
        return a == b
    return math.isclose(va, vb, rel_tol=1e-9)


def matches(task: Filters, dataset: Filters) -> bool:
    """Whether a dataset with ``dataset`` filters answers a task with ``task`` filters."""
    if task.beam is None and task.physics is None:
        return False
    for key in ("detector", "beam", "physics"):
        wanted = getattr(task, key)
        if wanted is not None and getattr(dataset, key) != wanted:
            return False
    if not q2_compatible(task.q2, dataset.q2):
        return False
    if task.species is not None and dataset.species is not None and task.species != dataset.species:
        return False
    return energy_compatible(task.energy, dataset.energy)


# ---- from a snapshot to the catalogue's outputs --------------------------------------


def split_did(did: str) -> tuple[str, str]:
    scope, _, name = did.partition(":")
    return scope, name


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _largest(dataset: Mapping[str, Any], key: str) -> int | None:
    """The dataset's own ``key`` unless null; then the largest per-RSE value (or None)."""
    own = dataset.get(key)
    if isinstance(own, int) and not isinstance(own, bool):
        return own
    per_rse = [r.get(key) for r in dataset.get("rse_replicas") or []]
    numbers = [v for v in per_rse if isinstance(v, int) and not isinstance(v, bool)]
    return max(numbers) if numbers else None


def output_entry(
    dataset: Mapping[str, Any], stage: str, version: str, fetched_at: str
) -> dict[str, Any]:
    """One entry of a task's ``outputs`` for a matched dataset."""
    rses = []
    for rep in dataset.get("rse_replicas") or []:
        files, total = _count(rep.get("available_length")), _count(rep.get("length"))
        rses.append(
            {
                "rse": rep.get("rse"),
                "files": files,
                "total": total,
                "complete": total > 0 and files == total,
            }
        )
    entry = {
        "did": dataset["did"],
        "stage": stage,
        "version": version,
        "filters": dataset_filters(split_did(dataset["did"])[1]).as_dict(),
        "rses": rses,
        "file_count": _largest(dataset, "length"),
        "bytes": _largest(dataset, "bytes"),
        "complete": bool(rses) and all(r["complete"] for r in rses),
        "checked_at": fetched_at,
    }
    if dataset.get("error"):
        entry["error"] = dataset["error"]
    return entry


def unmatched_entry(dataset: Mapping[str, Any], stage: str) -> dict[str, Any]:
    entry = {
        "did": dataset["did"],
        "stage": stage,
        "files": _largest(dataset, "length"),
        "bytes": _largest(dataset, "bytes"),
        "rses": sorted(str(r.get("rse")) for r in dataset.get("rse_replicas") or []),
        "filters": dataset_filters(split_did(dataset["did"])[1]).as_dict(),
    }
    if dataset.get("error"):
        entry["error"] = dataset["error"]
    return entry


@attrs.frozen
class Matching:
    """The outputs of every task (by name, possibly empty) and the datasets nobody asked for."""

    outputs: dict[str, list[dict[str, Any]]]
    unmatched: list[dict[str, Any]]


def stage_of(key: str) -> str:
    """``/RECO/26.02.0`` -> ``RECO``."""
    return key.strip("/").split("/")[0]


def match_snapshot(snapshot: Mapping[str, Any], tasks: Iterable[Mapping[str, Any]]) -> Matching:
    """Match every dataset of one campaign's snapshot onto ``tasks``.

    Each task's outputs are complete (they replace what the catalogue had), ordered by
    stage then did; a dataset may answer several tasks.
    """
    version = snapshot["campaign_name"]
    fetched_at = snapshot["fetched_at"]
    task_list = [(str(t["name"]), task_filters(t)) for t in tasks]
    outputs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in task_list}
    unmatched = []
    for key, entry in snapshot["campaigns"].items():
        stage = stage_of(key)
        for dataset in entry.get("datasets") or []:
            found = dataset_filters(split_did(dataset["did"])[1])
            hit = False
            for name, wanted in task_list:
                if matches(wanted, found):
                    outputs[name].append(output_entry(dataset, stage, version, fetched_at))
                    hit = True
            if not hit:
                unmatched.append(unmatched_entry(dataset, stage))
    for entries in outputs.values():
        entries.sort(key=lambda e: (e["stage"], e["did"]))
    unmatched.sort(key=lambda e: (e["stage"], e["did"]))
    return Matching(outputs=outputs, unmatched=unmatched)
