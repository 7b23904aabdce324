"""``$SWF_TMP_DIR/provenance/<campaign>.json``: written whole, only when it changed.

Readers (the web tier, as another user) only ever see a whole file: it is written to a
temporary file in the same directory, flushed, made world-readable and renamed over the
old one.  Other members of the operator's group share the cache, so nothing here
follows a symbolic link: the directory is opened with ``O_NOFOLLOW`` and every file
operation is relative to that open directory, so swapping ``provenance`` for a link
after the check cannot redirect the write; a link planted as the file itself is
replaced, never written through.

A document equal to the one on disk (``generated_at`` aside) is not written at all, so
the file's mtime says when its content last changed.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsagent_rucio_snapshot.cachefiles import TIME_FORMAT, check_version

SUBDIR = "provenance"
#: Slack over the new document's size when reading the old one: a bigger file differs.
READ_SLACK = 4096


class CacheRefused(Exception):
    """The cache directory is not one this capability will write into."""


def now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def provenance_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / SUBDIR


def provenance_path(cache_dir: Path, version: str) -> Path:
    """The file of campaign ``version``; :class:`ValueError` unless it is a version."""
    return provenance_dir(cache_dir) / f"{check_version(version)}.json"


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n"


def _open_dir(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)  # the cache root, as configured
    try:
        os.mkdir(path, 0o700)
        created = True
    except FileExistsError:
        created = False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CacheRefused(
            f"{path}: not a directory this capability writes into "
            f"({'a symbolic link' if path.is_symlink() else exc.strerror})"
        ) from None
    if created:
        os.fchmod(fd, 0o2775)  # noqa: S103 - group-writable, setgid: like the cache root
    return fd


def _previous(dir_fd: int, name: str, limit: int) -> dict[str, Any] | None:
    """The document in the current file, if it is a regular file no bigger than ``limit``."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None  # absent, a link, unreadable: written anew
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        doc = json.loads(data)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return doc if isinstance(doc, dict) else None


def write_if_changed(path: Path, doc: dict[str, Any]) -> tuple[bool, str]:
    """Write ``doc`` (with ``generated_at``) at ``path`` unless the file already says it.

    Returns whether it was written and the document's ``generated_at``: now when
    written, the kept file's otherwise.
    """
    dir_fd = _open_dir(path.parent)
    try:
        old = _previous(dir_fd, path.name, len(encode({**doc, "generated_at": now()})) + READ_SLACK)
        if old is not None and isinstance(old.get("generated_at"), str):
            kept_at = old.pop("generated_at")
            if old == doc:
                return False, kept_at
        generated_at = now()
        data = encode({**doc, "generated_at": generated_at})
        tmp = f".{path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
        )
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fchmod(out.fileno(), 0o644)  # the web tier reads as another user
                os.fsync(out.fileno())
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise
        os.fsync(dir_fd)  # the rename itself survives a crash
        return True, generated_at
    finally:
        os.close(dir_fd)
