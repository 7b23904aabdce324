"""The shared cache: where one job's log lives and how it gets there.

::

    <cache>/panda-logs/<jeditaskid>/<pandaid>/       the kept members, .done | .error
    <cache>/panda-logs/.staging/w-<task>-<id>-XXXX/  a running job's private work area
    <cache>/panda-logs/.staging/old-<epoch>-...      a replaced copy, kept a minute for readers
    <cache>/panda-logs/.locks/<jeditaskid>-<pandaid> one fetch of a job at a time

Paths are built only from the parsed ids.  The cache root and ``panda-logs`` are the
operator's (they may be links to another disk); the task and job levels are made by
this code, so a symbolic link or a file planted there is never written through: a job
directory that is not a real directory is replaced, a task directory that is not one
is refused.  A new job directory is filled in the work area, on the same filesystem,
and swapped into place whole (see :mod:`.atomic`), so a reader sees the old directory
or the new one, never a directory without ``.done`` holding log files, and never a
half-written file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from opsagent_fetch_payload_log import atomic

LOGS = "panda-logs"
STAGING = ".staging"
LOCKS = ".locks"
DIR_MODE = 0o2775
FILE_MODE = 0o644
DONE = ".done"
ERROR = ".error"
#: The attempt in progress: ``{"attempt": n, "step": ..., "ts": ...}``.  The web view
#: reads only ``.error``, whose count therefore moves only when an attempt has failed;
#: ``.running`` left by a job killed outright is counted as one failure by the next.
RUNNING = ".running"
#: A work area still under its creation name this long is a leftover of a crash.
UNCLAIMED_AFTER = 600.0
#: A replaced job directory is kept this long for readers that had it open.
READER_GRACE = 60.0
_MAX_MARKER = 64 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR = _DIR_FLAGS | os.O_NOFOLLOW


class CacheError(Exception):
    """The cache cannot be used as it stands; the message names the path and the remedy."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mkdir(path: str | Path, mode: int, dir_fd: int | None = None) -> bool:
    """Create a directory with exactly ``mode`` (umask aside); False when it existed."""
    try:
        os.mkdir(path, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        return False
    fd = os.open(path, _NOFOLLOW_DIR, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def make_job_dir(dir_fd: int, name: str, gid: int) -> int:
    """Create a job directory (mode 2775, group ``gid``) in a work area; return its fd.

    The work area is private and not setgid, so the group the cache's setgid tree would
    have given is set here, before any file is created, and files inherit it.
    """
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)
    try:
        try:
            os.fchown(fd, -1, gid)
        except PermissionError:
            pass  # not a member of the cache's group: files keep this user's group
        os.fchmod(fd, DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(dir_fd: int, name: str, data: bytes, *, sync: bool) -> None:
    """Write ``name`` in ``dir_fd`` whole: a temporary file renamed over it."""
    tmp = f".{name}.{os.getpid()}.{time.monotonic_ns()}"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        FILE_MODE,
        dir_fd=dir_fd,
    )
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    # Replaces a planted link or file named ``name`` itself, never what it points to.
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def read_marker(dir_fd: int, name: str) -> bytes | None:
    """A small regular file in ``dir_fd``, not following links; None when absent."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd
        )
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _MAX_MARKER)
    finally:
        os.close(fd)


def remove(dir_fd: int, name: str) -> None:
    """Remove whatever ``name`` is in ``dir_fd``, without following links."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)
    else:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


class Cache:
    """The ``panda-logs`` tree under one cache root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.logs = self.root / LOGS
        self.staging = self.logs / STAGING
        self.locks = self.logs / LOCKS

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cache root {self.root} cannot be created ({exc.strerror}); create it "
                f"(world-readable: the web tier reads it) or set SWF_TMP_DIR / [host] cache_dir"
            ) from None
        try:
            _mkdir(self.logs, DIR_MODE)
            for private in (self.staging, self.locks):
                _mkdir(private, 0o700)
                _check_private(private)
        except OSError as exc:
            raise CacheError(f"cannot prepare {self.logs}: {exc.strerror}") from None

    def inspect(self) -> str:
        """What :meth:`prepare` would find, without creating anything; raises CacheError."""
        if not self.logs.exists():
            return f"{self.logs} does not exist yet; the first job creates it"
        if not self.logs.is_dir() or not os.access(self.logs, os.W_OK | os.X_OK):
            raise CacheError(f"{self.logs} is not a directory this user can write to")
        for private in (self.staging, self.locks):
            if os.path.lexists(private):
                _check_private(private)
        return f"{self.logs} is usable"

    def slot(self, jeditaskid: str, pandaid: str) -> Slot:
        return Slot(self, jeditaskid, pandaid)

    def work_area(self, jeditaskid: str, pandaid: str) -> WorkArea:
        return WorkArea(self, f"{jeditaskid}-{pandaid}")

    def job_lock(self, jeditaskid: str, pandaid: str) -> JobLock:
        return JobLock(self.locks / f"{jeditaskid}-{pandaid}")

    def clean_leftovers(self) -> list[str]:
        """Remove work areas and lock files of jobs no longer running, and old copies.

        A live job holds a lock on its work area and its job lock; a killed one's locks
        were released by the kernel, so whatever can be locked here is a leftover.
        Replaced job directories go once :data:`READER_GRACE` has passed.  Returns the
        names removed.
        """
        removed: list[str] = []
        for parent, entries in (
            (self.staging, _listdir(self.staging)),
            (self.locks, _listdir(self.locks)),
        ):
            for name in entries:
                path = parent / name
                if parent == self.staging and name.startswith("old-"):
                    if _set_aside_at(name) < time.time() - READER_GRACE:
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(name)
                    continue
                if parent == self.staging and not name.startswith("w-"):
                    if _age(path) > UNCLAIMED_AFTER:
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(name)
                    continue
                try:
                    flags = _DIR_FLAGS if parent == self.staging else os.O_RDONLY | os.O_CLOEXEC
                    fd = os.open(path, flags | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue  # alive
                try:
                    if not _same_file(fd, path):
                        continue
                    if parent == self.staging:
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(name)
                finally:
                    os.close(fd)
        return removed


def _check_private(path: Path) -> None:
    # Work areas and locks live here: a link or a directory others can write to would
    # let them choose where the job writes.
    st = os.stat(path, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise CacheError(
            f"{path} must be a directory of this user that nobody else can write to "
            f"(a link, another owner or a group/world-writable mode is refused); remove it"
        )


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _set_aside_at(name: str) -> float:
    try:
        return float(name.split("-")[1])
    except (IndexError, ValueError):
        return 0.0


def _age(path: Path) -> float:
    try:
        return time.time() - os.stat(path, follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return 0.0


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class JobLock:
    """One fetch of a job at a time, across processes and hosts sharing the cache.

    ``flock`` on ``.locks/<task>-<id>``; the holder removes the file before releasing,
    so a waiter that then gets the lock on the removed file notices and tries again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.waited = False

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.waited = True
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        raise TimeoutError(
                            f"another fetch of this job still holds {self.path}"
                        ) from None
                    time.sleep(0.05)
            if _same_file(fd, self.path):
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


class WorkArea:
    """A job's private directory under ``.staging``: the download, the new job directory.

    Created under a temporary name, locked, then renamed to ``w-...``: the cleaner only
    takes ``w-`` entries whose lock it can get, so it never removes one being set up.
    """

    def __init__(self, cache: Cache, label: str) -> None:
        tmp = tempfile.mkdtemp(prefix=f"new-{label}-", dir=cache.staging)
        self.fd = os.open(tmp, _NOFOLLOW_DIR)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = Path(tmp).with_name("w-" + Path(tmp).name[len("new-") :])
        os.rename(tmp, self.path)
        self.staging_fd = os.open(cache.staging, _NOFOLLOW_DIR)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self.fd)
        os.close(self.staging_fd)


class Slot:
    """The cache place of one PanDA job's log: ``panda-logs/<jeditaskid>/<pandaid>``."""

    def __init__(self, cache: Cache, jeditaskid: str, pandaid: str) -> None:
        self.cache = cache
        self.name = pandaid
        self.path = cache.logs / jeditaskid / pandaid
        logs_fd = os.open(cache.logs, _DIR_FLAGS)
        try:
            created = False
            try:
                os.mkdir(jeditaskid, 0o700, dir_fd=logs_fd)
                created = True
            except FileExistsError:
                pass
            try:
                self.task_fd = os.open(jeditaskid, _NOFOLLOW_DIR, dir_fd=logs_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise CacheError(
                        f"{cache.logs / jeditaskid} is not a directory (a symbolic link or a "
                        f"file); refusing to write through it: remove it"
                    ) from None
                raise
            if created:
                os.fchmod(self.task_fd, DIR_MODE)
        finally:
            os.close(logs_fd)

    @property
    def gid(self) -> int:
        """The group job directories get: the task directory's."""
        return os.fstat(self.task_fd).st_gid

    def close(self) -> None:
        os.close(self.task_fd)

    def _job_dir(self) -> int | None:
        """An fd of the job directory when it is a real directory."""
        try:
            return os.open(self.name, _NOFOLLOW_DIR, dir_fd=self.task_fd)
        except OSError:
            return None

    def done(self) -> list[str] | None:
        """The members listed in ``.done`` when the log is cached, else None."""
        fd = self._job_dir()
        if fd is None:
            return None
        try:
            raw = read_marker(fd, DONE)
        finally:
            os.close(fd)
        if raw is None:
            return None
        return [m for m in raw.decode("utf-8", "replace").strip().split(",") if m]

    def done_identity(self) -> tuple[int, int] | None:
        fd = self._job_dir()
        if fd is None:
            return None
        try:
            st = os.stat(DONE, dir_fd=fd, follow_symlinks=False)
            return (st.st_ino, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
        except FileNotFoundError:
            return None
        finally:
            os.close(fd)

    def failures(self) -> int:
        """Failed attempts recorded in ``.error`` (0 when none; 1 when it is unreadable)."""
        raw = self._read(ERROR)
        if raw is None:
            return 0
        try:
            value = json.loads(raw).get("attempts")
        except (ValueError, AttributeError):
            return 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return 1
        return value

    def unfinished(self) -> bool:
        """Whether an attempt left ``.running`` behind (it is still going, or it died)."""
        return self._read(RUNNING) is not None

    def attempts(self) -> int:
        """Failed attempts so far, for a caller holding the job's lock: those in ``.error``,
        plus one for an attempt that died without recording its end (``.running``)."""
        return self.failures() + (1 if self.unfinished() else 0)

    def _read(self, name: str) -> bytes | None:
        fd = self._job_dir()
        if fd is None:
            return None
        try:
            return read_marker(fd, name)
        finally:
            os.close(fd)

    def write_running(self, work: WorkArea, attempt: int, step: str) -> None:
        """Record the attempt in progress and its step, leaving ``.error`` as it is."""
        body = json.dumps({"attempt": attempt, "step": step, "ts": utc_now()})
        self._write_marker(work, RUNNING, body.encode())

    def write_error(self, work: WorkArea, attempts: int, reason: str) -> None:
        """Record a failed attempt in ``.error`` (and end ``.running``); the log, if any,
        stays."""
        body = json.dumps({"attempts": attempts, "last_error": reason, "ts": utc_now()})
        self._write_marker(work, ERROR, body.encode())
        fd = self._job_dir()
        if fd is not None:
            try:
                remove(fd, RUNNING)
            finally:
                os.close(fd)

    def _write_marker(self, work: WorkArea, name: str, body: bytes) -> None:
        fd = self._job_dir()
        if fd is not None:
            try:
                write_file(fd, name, body, sync=False)
                return
            except IsADirectoryError:
                pass  # a planted directory under the marker's name: rebuild the job directory
            finally:
                os.close(fd)
        # No real job directory: build one holding only the marker and put it in place.
        remove(work.fd, "error-dir")
        efd = make_job_dir(work.fd, "error-dir", self.gid)
        try:
            write_file(efd, name, body, sync=False)
        finally:
            os.close(efd)
        if atomic.place(work.fd, "error-dir", self.task_fd, self.name):
            remove(work.fd, "error-dir")

    def install(self, work: WorkArea, new: str) -> None:
        """Swap the finished directory ``new`` of ``work`` into place.

        A complete copy it displaces is not emptied at once: a reader that opened it
        just before the swap would list an emptying directory.  It is set aside under
        ``.staging/old-<epoch>-...`` and removed by a later :meth:`Cache.clean_leftovers`.
        Anything else displaced (only ``.error``, a planted link) goes at once.
        """
        if not atomic.place(work.fd, new, self.task_fd, self.name):
            return
        try:
            fd = os.open(new, _NOFOLLOW_DIR, dir_fd=work.fd)
        except OSError:
            complete = False
        else:
            try:
                complete = read_marker(fd, DONE) is not None
            finally:
                os.close(fd)
        if complete:
            aside = f"old-{int(time.time())}-{work.path.name}"
            os.rename(new, aside, src_dir_fd=work.fd, dst_dir_fd=work.staging_fd)
        else:
            remove(work.fd, new)
