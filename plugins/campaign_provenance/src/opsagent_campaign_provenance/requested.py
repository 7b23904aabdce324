"""What was requested: the catalogue's EVGEN paths, checked, and the request's selection.

The catalogue's rows are not trusted: an ``input_path`` becomes part of a Rucio name
pattern and of the cache file, so it must be an EVGEN path whose suffix uses only the
characters Rucio allows in a name, with no empty, ``.`` or ``..`` segment; a detector
configuration must look like one.  A row that does not is rejected with a reason (the
sweep goes on without it and reports how many were rejected).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs
from opsagent import shown

EVGEN_ROOT = "/volatile/eic/EPIC/EVGEN/"
#: One path segment: Rucio's name characters, not ``.`` or ``..``.
SEGMENT = r"(?!\.\.?(?:/|$))[A-Za-z0-9._=+-]{1,128}"
SUFFIX = rf"{SEGMENT}(?:/{SEGMENT}){{0,31}}"
DETECTOR = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"
#: A request's ``path_filter``: the same, starting with a letter or digit (as physics
#: paths do), so no filter reads like an option ("-o/tmp/x") in a log or a shell.
PATH_FILTER = rf"(?=[A-Za-z0-9]){SUFFIX}"
_SUFFIX = re.compile(SUFFIX)
_DETECTOR = re.compile(DETECTOR)
#: Rejections kept in the cache file by reason (all are counted).
SHOWN_REJECTIONS = 20


@attrs.frozen(order=True)
class Requested:
    """One requested path: RECO datasets ``/RECO/<v>/<detector_config>/<suffix>[/...]``."""

    detector_config: str
    suffix: str

    @property
    def input_path(self) -> str:
        return EVGEN_ROOT + self.suffix


@attrs.frozen
class Selection:
    """The part of a campaign one sweep looks at (``None``: all of it)."""

    detector_configs: frozenset[str] | None = None
    #: A leading part of the EVGEN suffix, whole segments (``DIS/NC`` takes ``DIS/NC/...``).
    path_filter: str | None = None

    def takes(self, detector_config: str, suffix: str) -> bool:
        if self.detector_configs is not None and detector_config not in self.detector_configs:
            return False
        f = self.path_filter
        return f is None or suffix == f or suffix.startswith(f + "/")

    def as_dict(self) -> dict[str, Any]:
        return {
            "detector_configs": None
            if self.detector_configs is None
            else sorted(self.detector_configs),
            "path_filter": self.path_filter,
        }


def check_row(row: dict[str, Any]) -> Requested | str:
    """The request a catalogue row names, or why it names none."""
    path, detector = row.get("input_path"), row.get("detector_config")
    if not isinstance(path, str) or not path.startswith(EVGEN_ROOT):
        return f"input_path {shown(path)}: expected {EVGEN_ROOT}<suffix>"
    suffix = path[len(EVGEN_ROOT) :]
    if not _SUFFIX.fullmatch(suffix):
        return (
            f"input_path {shown(path)}: the suffix must be segments of A-Z a-z 0-9 . _ = + -, "
            "none empty, '.' or '..'"
        )
    if not isinstance(detector, str) or not _DETECTOR.fullmatch(detector):
        return f"detector_config {shown(detector)}: expected a name like epic_craterlake"
    return Requested(detector, suffix)


def requests_of(
    rows: Iterable[dict[str, Any]], selection: Selection
) -> tuple[list[Requested], list[str]]:
    """The distinct requests the selection takes, sorted, and the reasons rows were rejected."""
    found: set[Requested] = set()
    rejected: list[str] = []
    for i, row in enumerate(rows):
        checked = check_row(row)
        if isinstance(checked, str):
            rejected.append(f"row {i}: {checked}")
        elif selection.takes(checked.detector_config, checked.suffix):
            found.add(checked)
    return sorted(found), rejected
