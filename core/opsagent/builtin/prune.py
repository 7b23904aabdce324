"""``prune_cache``: remove what is old in the cache's areas, and nothing a job holds.

By default the one area is ``panda-logs``: the old agent's cron pruned
``panda-logs/<task>/<job>`` directories older than 30 days, and nothing else of the
shared cache (the Rucio snapshots, other tools' files).  More areas, or ``"."`` for the
whole cache root, only by ``[capability.prune_cache] areas = [...]``.

Rules, in each area (a path under ``[host] cache_dir``, opened without following links):

* The area itself and every dot-directory in it (``.staging``, ``.locks``, ...) are
  looked into, never removed themselves; with ``"."`` so are the root's direct children.
* Any other directory whose whole subtree (itself and everything in it) was last
  modified before the cut-off goes as one piece -- a job directory never loses half its
  files.  It is first renamed to ``.pruning-...`` beside itself, then emptied; a
  ``.pruning-`` leftover of an interrupted prune is removed on the next run.
* An old file outside such a directory (a leftover, a lock file) goes by itself.
* A symbolic link is never followed and never removed: it may be the operator's (a
  capability area on another disk).  Links inside a removed directory go with it,
  their targets stay.
* A job *holds* a directory by holding an ``flock`` on the directory itself, and a file
  (a lock file) by holding an ``flock`` on it -- what the fetch capability's work areas
  and job locks do (``opsagent_fetch_payload_log.cache``).  Pruning takes the same lock
  (non-blocking) before it removes a directory and keeps it until the directory is
  gone; a held directory, or an old directory with a held directory inside, is left
  with everything in it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import time
import uuid
from pathlib import Path

import attrs

from opsagent.job import Job
from opsagent.outcome import JobFailed, Outcome
from opsagent.schema import FieldError

#: Names listed in the event; the counts cover everything.
LIST_LIMIT = 200
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PRUNING = ".pruning-"


#: The youngest a prune may reach: a request (from anyone the broker lets write to the
#: queue) for ``older_than_days = 0.00001`` would otherwise empty the cache, logs a job
#: cached a second ago included.
MIN_DAYS = 1.0


def _at_least_a_day(_inst: object, attr: attrs.Attribute, value: float) -> None:
    if not value >= MIN_DAYS:
        raise FieldError(attr.name, f"expected a number of days >= {MIN_DAYS:g}, got {value}")


def _areas(_inst: object, attr: attrs.Attribute, value: list[str]) -> None:
    for area in value:
        parts = area.split("/")
        if area != "." and (not area or area.startswith("/") or {"", ".", ".."} & set(parts)):
            raise FieldError(
                attr.name,
                f"{area!r}: expected a path relative to the cache root without '.' or '..' "
                f"components (e.g. 'panda-logs'), or '.' for the whole cache",
            )


@attrs.frozen
class PruneConfig:
    """``[capability.prune_cache]``: what the prune may look into."""

    #: Paths under the cache root whose old contents go; ``"."``: the whole cache root.
    areas: list[str] = attrs.field(
        factory=lambda: ["panda-logs"],
        validator=_areas,
        metadata={"description": "areas under the cache root to prune ('.' for all of it)"},
    )


@attrs.frozen
class PruneInput:
    older_than_days: float = attrs.field(
        default=30.0,
        validator=_at_least_a_day,
        metadata={
            "description": "remove what was last modified longer ago than this (at least 1)",
            "minimum": MIN_DAYS,
        },
    )
    dry_run: bool = attrs.field(
        default=False, metadata={"description": "list what would go, remove nothing"}
    )


@attrs.define
class Report:
    removed: list[str] = attrs.Factory(list)
    files: int = 0
    bytes: int = 0
    held: list[str] = attrs.Factory(list)
    links: list[str] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)

    def to_json(self, dry_run: bool) -> dict[str, object]:
        return {
            "dry_run": dry_run,
            "removed": self.removed[:LIST_LIMIT],
            "removed_count": len(self.removed),
            "files": self.files,
            "bytes": self.bytes,
            "held": self.held[:LIST_LIMIT],
            "links_left": self.links[:LIST_LIMIT],
            "errors": self.errors[:LIST_LIMIT],
        }


def _held(fd: int) -> bool:
    """True when someone else holds an flock on ``fd``'s file; else this caller now does."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


@attrs.define
class _Survey:
    newest: float = 0.0
    files: int = 0
    bytes: int = 0
    held: str | None = None


def _survey(fd: int, rel: str, out: _Survey) -> None:
    """Newest mtime, files and bytes under ``fd``, and the first directory a job holds."""
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        out.newest = max(out.newest, st.st_mtime)
        if not stat.S_ISDIR(st.st_mode):
            out.files += 1
            out.bytes += st.st_size if stat.S_ISREG(st.st_mode) else 0
            continue
        sub = os.open(entry.name, _DIR, dir_fd=fd)
        try:
            if _held(sub):
                out.held = f"{rel}/{entry.name}"
                return
            fcntl.flock(sub, fcntl.LOCK_UN)
            _survey(sub, f"{rel}/{entry.name}", out)
            if out.held:
                return
        finally:
            os.close(sub)


class Pruner:
    def __init__(self, cutoff: float, dry_run: bool) -> None:
        self.cutoff = cutoff
        self.dry_run = dry_run
        self.report = Report()

    def area(self, fd: int, rel: str, depth: int) -> None:
        for name in sorted(os.listdir(fd)):
            path = f"{rel}/{name}" if rel else name
            try:
                self.entry(fd, name, path, depth)
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # gone meanwhile: nothing to do
                    self.report.errors.append(f"{path}: {exc.strerror}")

    def entry(self, parent: int, name: str, path: str, depth: int) -> None:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            self.report.links.append(path)
            return
        if not stat.S_ISDIR(st.st_mode):
            if st.st_mtime < self.cutoff:
                self.file(parent, name, path, st)
            return
        fd = os.open(name, _DIR, dir_fd=parent)
        try:
            if _held(fd):
                self.report.held.append(path)
                return
            if name.startswith(PRUNING):
                self.directory(parent, name, path, fd, stale=True)
                return
            if depth > 0 and not name.startswith("."):
                survey = _Survey(newest=st.st_mtime)
                _survey(fd, path, survey)
                if survey.held:
                    self.report.held.append(survey.held)
                    return
                if survey.newest < self.cutoff:
                    self.directory(parent, name, path, fd, survey=survey)
                    return
            self.area(fd, path, depth + 1)
        finally:
            os.close(fd)

    def file(self, parent: int, name: str, path: str, st: os.stat_result) -> None:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent
            )
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.ENXIO):
                raise
            fd = -1
        try:
            if fd >= 0 and _held(fd):
                self.report.held.append(path)
                return
            if not self.dry_run:
                os.unlink(name, dir_fd=parent)
        finally:
            if fd >= 0:
                os.close(fd)
        self.report.removed.append(path)
        self.report.files += 1
        self.report.bytes += st.st_size if stat.S_ISREG(st.st_mode) else 0

    def directory(
        self,
        parent: int,
        name: str,
        path: str,
        fd: int,
        *,
        survey: _Survey | None = None,
        stale: bool = False,
    ) -> None:
        if survey is None:
            survey = _Survey()
            _survey(fd, path, survey)
        if not self.dry_run:
            aside = name if stale else f"{PRUNING}{name}-{uuid.uuid4().hex[:8]}"
            if not stale:
                os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
                moved = os.stat(aside, dir_fd=parent, follow_symlinks=False)
                mine = os.fstat(fd)
                if (moved.st_dev, moved.st_ino) != (mine.st_dev, mine.st_ino):
                    # Replaced between the checks and the rename (a job installed a new
                    # copy): put it back and leave it.
                    os.rename(aside, name, src_dir_fd=parent, dst_dir_fd=parent)
                    return
            shutil.rmtree(aside, dir_fd=parent)
        self.report.removed.append(path + "/")
        self.report.files += survey.files
        self.report.bytes += survey.bytes


def prune_tree(
    root: Path,
    *,
    older_than_days: float,
    dry_run: bool = False,
    areas: list[str] | tuple[str, ...] = (".",),
) -> Report:
    """Prune ``areas`` of ``root`` (see the module's rules); the report lists what went."""
    pruner = Pruner(time.time() - older_than_days * 86400, dry_run)
    try:
        # The root itself may be a link: it is the operator's choice of disk.
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return pruner.report
    try:
        for area in areas:
            if area == ".":
                pruner.area(root_fd, "", 0)
                continue
            fd = _open_area(root_fd, area, pruner.report)
            if fd is None:
                continue
            try:
                pruner.area(fd, area, 1)
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return pruner.report


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_area(root_fd: int, area: str, report: Report) -> int | None:
    """The area's directory, each component opened without following a link."""
    fd = os.dup(root_fd)
    walked = []
    for part in area.split("/"):
        walked.append(part)
        try:
            sub = os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            link = exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, part)
            os.close(fd)
            if link:
                report.links.append("/".join(walked))
            elif exc.errno != errno.ENOENT:
                report.errors.append(f"{'/'.join(walked)}: {exc.strerror}")
            return None
        os.close(fd)
        fd = sub
    return fd


def prune_cache(inp: PruneInput, job: Job) -> Outcome:
    try:
        areas = (job.config or PruneConfig()).areas
        report = prune_tree(
            job.cache_dir, older_than_days=inp.older_than_days, dry_run=inp.dry_run, areas=areas
        )
    except OSError as exc:
        raise JobFailed(f"cannot prune {job.cache_dir}: {exc}") from exc
    job.log.info(
        "{} {} entries, {} files, {} bytes under {} ({} held, {} links left)",
        "would remove" if inp.dry_run else "removed",
        len(report.removed),
        report.files,
        report.bytes,
        job.cache_dir,
        len(report.held),
        len(report.links),
    )
    return Outcome.ok(**report.to_json(inp.dry_run))
