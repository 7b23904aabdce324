"""The files this capability leaves in the shared cache, and how they are written.

Readers (the web tier, as another user) only ever see a whole file: each one is
written to a temporary file in the same directory, flushed to disk, made
world-readable, and renamed over the old one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsagent import shown

from opsagent_rucio_snapshot.fields import CAMPAIGN

SUBDIR = "rucio-snapshots"
_VERSION = re.compile(CAMPAIGN)
#: The time format of ``fetched_at`` / ``checked_at`` (as the deployed job wrote it).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def snapshot_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / SUBDIR


def is_version(version: object) -> bool:
    """Whether ``version`` may name a file here: a campaign version like ``26.02.0``,
    whatever its source (the request, the configuration, the catalogue)."""
    return isinstance(version, str) and _VERSION.fullmatch(version) is not None


def check_version(version: str) -> str:
    """``version`` if :func:`is_version`, else :class:`ValueError`."""
    if not is_version(version):
        raise ValueError(f"{shown(version)} is not a campaign version like 26.02.0")
    return version


def snapshot_path(cache_dir: Path, version: str) -> Path:
    return snapshot_dir(cache_dir) / f"current-{check_version(version)}.json"


def matches_path(cache_dir: Path, version: str) -> Path:
    return snapshot_dir(cache_dir) / f"matches-{check_version(version)}.json"


def ensure_dir(path: Path) -> Path:
    """Create the snapshot directory group-writable and setgid, like the cache root."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        try:
            path.chmod(0o2775)
        except PermissionError:  # someone else's directory: keep its mode
            pass
    return path


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON so that no reader sees a partial file."""
    directory = ensure_dir(path.parent)
    data = json.dumps(obj, indent=1, ensure_ascii=False).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the web tier reads as another user
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
