"""Private directories: where a job puts a secret that a program must read from a file.

Never in the shared cache: the cache is group-writable (``UMask=0002``, setgid, shared with
the web tier), so any path built in it can be redirected by a member of the group with a
planted symbolic link.  A :func:`private_dir` is instead

- under ``$RUNTIME_DIRECTORY`` when the unit sets ``RuntimeDirectory=`` (a tmpfs that
  systemd removes when the unit stops), else ``$XDG_RUNTIME_DIR``, else ``/dev/shm`` (both
  tmpfs), else ``$TMPDIR`` or ``/tmp``.  The base must be a directory, not a link, and
  either this user's and writable by nobody else, or a sticky shared one (``/dev/shm``,
  ``/tmp``) where a name of 128 random bits made by ``mkdir`` cannot have been planted.
  ``$RUNTIME_DIRECTORY`` that fails the check is an error, not a reason to look elsewhere;
- made of entries created relative to an open descriptor of their parent and reopened with
  ``O_NOFOLLOW``: a link met anywhere is refused, directories are 0700 and files 0600
  whatever the umask, and nothing that another user owns is used;
- removed on exit relative to its parent's descriptor, never following a link.  A job
  killed before that leaves it behind on tmpfs; its name carries the pid that made it, and
  the next :func:`private_dir` of the same user removes it once that process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

#: Every private directory is named ``opsagent-<pid>-<32 hex digits>``.
PREFIX = "opsagent-"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PrivateDirError(OSError):
    """No private directory could be made safely; the message says where and why."""


class PrivateDir:
    """An open private directory: ``path`` for programs, descriptor-relative for us."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._children: list[PrivateDir] = []

    def __repr__(self) -> str:
        return f"PrivateDir({str(self.path)!r})"

    def mkdir(self, name: str) -> PrivateDir:
        """A new subdirectory ``name`` (0700); it must not exist yet."""
        _plain(name)
        os.mkdir(name, 0o700, dir_fd=self._fd)
        child = _adopt(self.path / name, name, self._fd)
        self._children.append(child)
        return child

    def write(self, name: str, data: bytes) -> Path:
        """A new file ``name`` (0600) holding ``data``; it must not exist yet."""
        _plain(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=self._fd)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return self.path / name

    def _close(self) -> None:
        for child in self._children:
            child._close()
        self._children.clear()
        os.close(self._fd)


def _plain(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a plain file name")


def _adopt(path: Path, name: str, parent_fd: int) -> PrivateDir:
    """Open the directory just made as ``name`` under ``parent_fd``: ours, no link, 0700."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise PrivateDirError(f"{path}: cannot open what was just made ({exc.strerror})") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise PrivateDirError(f"{path} belongs to uid {st.st_uid}, not to this user")
    os.fchmod(fd, 0o700)
    return PrivateDir(path, fd)


def _bases(environ: Mapping[str, str]) -> list[tuple[str, bool]]:
    """Candidate bases, best first; ``True`` marks one that must be usable if set."""
    out: list[tuple[str, bool]] = []
    runtime = (environ.get("RUNTIME_DIRECTORY") or "").split(":")[0]
    if runtime:
        return [(runtime, True)]
    if environ.get("XDG_RUNTIME_DIR"):
        out.append((environ["XDG_RUNTIME_DIR"], False))
    out.append(("/dev/shm", False))
    if environ.get("TMPDIR"):
        out.append((environ["TMPDIR"], False))
    out.append(("/tmp", False))  # noqa: S108 - a random 0700 name in a sticky directory
    return out


def _open_base(environ: Mapping[str, str]) -> tuple[Path, int]:
    refused: list[str] = []
    euid = os.geteuid()
    for base, required in _bases(environ):
        try:
            fd = os.open(base, _DIR_FLAGS)
        except OSError as exc:
            links = (errno.ELOOP, errno.ENOTDIR)
            why = "a symbolic link or not a directory" if exc.errno in links else exc.strerror
            refused.append(f"{base}: {why}")
            if required:
                break
            continue
        st = os.fstat(fd)
        private = st.st_uid == euid and not st.st_mode & 0o022
        sticky = bool(st.st_mode & stat.S_ISVTX) and st.st_uid in (0, euid)
        if private or sticky:
            return Path(base), fd
        os.close(fd)
        refused.append(
            f"{base}: owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o} "
            f"(needs to be this user's and writable by nobody else, or sticky)"
        )
        if required:
            break
    raise PrivateDirError(
        "no safe place for a private directory ("
        + "; ".join(refused)
        + "): run the host with RuntimeDirectory= in its unit (see contrib/systemd)"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(name: str, parent_fd: int) -> None:
    """Remove ``name`` under ``parent_fd`` and all it holds, never following a link."""
    st = os.lstat(name, dir_fd=parent_fd)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent_fd)  # the descriptor-relative, link-safe walk
    else:
        os.unlink(name, dir_fd=parent_fd)


def _sweep(base_fd: int) -> None:
    """Remove the private directories of this user whose process is gone."""
    euid = os.geteuid()
    with os.scandir(base_fd) as entries:
        names = [e.name for e in entries if e.name.startswith(PREFIX)]
    for name in names:
        pid, _, rest = name[len(PREFIX) :].partition("-")
        if not pid.isdigit() or not rest or _alive(int(pid)):
            continue
        try:
            st = os.lstat(name, dir_fd=base_fd)
            if st.st_uid == euid and stat.S_ISDIR(st.st_mode):
                _remove(name, base_fd)
        except OSError:
            continue  # gone meanwhile, or not ours to remove: the next sweep will see


@contextlib.contextmanager
def private_dir(environ: Mapping[str, str] | None = None) -> Iterator[PrivateDir]:
    """A fresh directory only this user can enter, removed when the block ends.

    ``environ`` (default ``os.environ``) supplies ``RUNTIME_DIRECTORY``,
    ``XDG_RUNTIME_DIR`` and ``TMPDIR``.  Raises :class:`PrivateDirError` when no base is safe.
    """
    base, base_fd = _open_base(os.environ if environ is None else environ)
    try:
        _sweep(base_fd)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(16)}"
        os.mkdir(name, 0o700, dir_fd=base_fd)
        top = _adopt(base / name, name, base_fd)
        try:
            yield top
        finally:
            top._close()
            _remove(name, base_fd)
    finally:
        os.close(base_fd)
