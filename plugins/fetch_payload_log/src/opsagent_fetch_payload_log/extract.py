"""Taking the four log files out of a tarball that is trusted in nothing.

The tarball is read as a stream, once, front to back.  Only regular-file members whose
base name is one of :data:`KEPT` are written, each as ``<dir>/<basename>`` with mode
0644 whatever the archive says (so no set-uid bit, no owner from the archive).  Links,
devices, FIFOs, directories, sparse files, and names that are absolute or contain
``..`` are never written, whatever their base name.  Caps bound the number of members,
the size of each member written and the size of the whole decompressed stream (which
also bounds the work spent skipping members).

Memory stays bounded whatever the archive says.  What :mod:`tarfile` reads into memory
before it hands over a member is refused before it is read: long-name and pax headers
above a small size, chains of them, pax global headers beyond a small total, and sparse
members of every GNU format (an old-GNU ``S`` header, any ``GNU.sparse.*`` pax key): a
sparse map, which can go on for the whole archive, would be read into a list whole.
Members already read are not kept.  Any error :mod:`tarfile` raises on a malformed
archive is a :class:`TarballRejected`.  The first member with a kept name wins; later
ones are skipped.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import queue
import tarfile
import threading
import zlib
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import IO, Any, Protocol

import attrs

from opsagent_fetch_payload_log import atomic

KEPT = frozenset({"payload.stdout", "payload.stderr", "pilotlog.txt", "pandatracerlog.txt"})
FILE_MODE = 0o644
CHUNK = 1 << 20
#: With ``sync``, writeback of each this-many bytes starts while extraction goes on.
WRITEBACK = 8 << 20
MAX_META_HEADER = 64 * 1024
#: Long-name and pax headers in a row before one member (tarfile reads them recursively).
MAX_META_CHAIN = 8
#: Pax global headers of an archive, in bytes together (tarfile keeps their keys to the end).
MAX_GLOBAL_PAX = MAX_META_HEADER
# Not in the type stubs, but part of tarfile since Python 3.2.
_BAD_HEADER: tuple[type[Exception], ...] = (
    tarfile.InvalidHeaderError,  # type: ignore[attr-defined]
    tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
)
#: What tarfile raises on a malformed archive besides TarError: nti() and the sparse
#: readers index and split raw bytes; int() refuses over 4300 digits; pax keys decode.
_MALFORMED: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    ValueError,  # UnicodeError too
    IndexError,
    OverflowError,
    RecursionError,
    lzma.LZMAError,
    zlib.error,
)
_WRITABLE = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_META = {
    tarfile.GNUTYPE_LONGNAME: "GNU long-name",
    tarfile.GNUTYPE_LONGLINK: "GNU long-link",
    tarfile.XHDTYPE: "pax",
    tarfile.XGLTYPE: "pax global",
    tarfile.SOLARIS_XHDTYPE: "pax",
}


class TarballRejected(Exception):
    """The tarball cannot be used; the message says why (prefixed ``tarball:``)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"tarball: {why}")


@attrs.frozen
class Limits:
    max_members: int = 10_000
    max_member_bytes: int = 1 << 30
    max_total_bytes: int = 4 << 30


@attrs.frozen
class Extracted:
    members: list[str]
    bytes_written: int
    skipped: list[str]


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Capped:
    """A read-only stream that refuses to yield more than ``cap`` bytes in total."""

    def __init__(self, inner: _Readable, cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.total += len(data)
        if self.total > self.cap:
            raise TarballRejected(f"decompresses to more than {self.cap} bytes (max_total_bytes)")
        return data


class _Ahead:
    """Decompresses in a thread, a few chunks ahead of the reader.

    zlib, bz2 and lzma release the GIL while they work, so decompression overlaps
    with parsing and writing the way ``gzip -d | tar`` does with two processes.
    Errors of the decompressor are raised in the reader.
    """

    def __init__(self, inner: IO[bytes], depth: int = 8) -> None:
        self._inner = inner
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buf = bytearray()
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="inflate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._inner.read(CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buf) < size) and not self._eof:
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if not item:
                self._eof = True
            self._buf += item
        if size < 0:
            size = len(self._buf)
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _sparse(kind: str, where: str) -> TarballRejected:
    return TarballRejected(f"a sparse member ({kind}) {where}: sparse files are not accepted")


class _CheckedInfo(tarfile.TarInfo):
    """Header checks :mod:`tarfile` does not make, made before it reads what they guard.

    Besides :meth:`fromtarfile` and :meth:`_proc_member`, this overrides the hooks
    tarfile (3.8 to 3.13) calls on sparse members: ``_proc_sparse`` (old GNU) and
    ``_proc_gnusparse_00``/``_01``/``_10`` (pax, called once the pax keys are parsed and
    before a 1.0 map is read), and ``_apply_pax_info`` (every pax key reaches a member
    through it).  tests check that tarfile still has them.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Any:
        # Long-name and pax headers fetch the member they describe by calling this again.
        depth = getattr(tarfile_, "_opsagent_chain", 0)
        if depth >= MAX_META_CHAIN:
            raise TarballRejected(
                f"more than {MAX_META_CHAIN} long-name or pax headers in a row "
                f"at byte {tarfile_.offset}"
            )
        tarfile_._opsagent_chain = depth + 1  # type: ignore[attr-defined]
        try:
            return super().fromtarfile(tarfile_)
        except _BAD_HEADER as exc:
            # tarfile takes a bad header after the first member for the end of the
            # archive and stops quietly; a header that lied about its size ends up here.
            raise TarballRejected(f"bad header at byte {tarfile_.offset}: {exc}") from None
        finally:
            tarfile_._opsagent_chain = depth  # type: ignore[attr-defined]

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _sparse("old GNU", f"{self.name!r} at byte {self.offset}")
        # Long-name and pax headers are read into memory whole: refuse big ones.
        if self.type in _META and self.size > MAX_META_HEADER:
            raise TarballRejected(
                f"a {_META[self.type]} header of {self.size} bytes (at most {MAX_META_HEADER})"
            )
        if self.type == tarfile.XGLTYPE:
            total = getattr(tarfile_, "_opsagent_global", 0) + self.size
            if total > MAX_GLOBAL_PAX:
                raise TarballRejected(
                    f"pax global headers of more than {MAX_GLOBAL_PAX} bytes in all"
                )
            tarfile_._opsagent_global = total  # type: ignore[attr-defined]
        return super()._proc_member(tarfile_)  # type: ignore[misc]

    def _proc_sparse(self, tarfile_: tarfile.TarFile) -> Any:
        raise _sparse("old GNU", f"{self.name!r} at byte {self.offset}")

    # ``member`` is the header that follows the pax keys; a 1.0 map would come next.
    def _proc_gnusparse_00(self, member: tarfile.TarInfo, *_: Any) -> None:
        raise _sparse("pax GNU.sparse 0.0", f"{member.name!r} at byte {self.offset}")

    def _proc_gnusparse_01(self, member: tarfile.TarInfo, *_: Any) -> None:
        raise _sparse("pax GNU.sparse 0.1", f"{member.name!r} at byte {self.offset}")

    def _proc_gnusparse_10(self, member: tarfile.TarInfo, *_: Any) -> None:
        raise _sparse("pax GNU.sparse 1.0", f"{member.name!r} at byte {self.offset}")

    def _apply_pax_info(self, pax_headers: dict[str, str], encoding: str, errors: str) -> None:
        keys = sorted(k for k in pax_headers if k.startswith("GNU.sparse."))
        if keys:
            raise _sparse(f"pax {', '.join(keys[:3])}", f"{self.name!r} at byte {self.offset}")
        super()._apply_pax_info(pax_headers, encoding, errors)  # type: ignore[misc]


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    return raw


def _why_not(member: tarfile.TarInfo) -> str | None:
    """Why a member with a kept base name is not written, or None when it is."""
    name = member.name
    if name.startswith("/"):
        return "absolute name"
    if ".." in name.split("/"):
        return "'..' in the name"
    if member.type not in _WRITABLE or member.issparse():
        kind = {
            tarfile.SYMTYPE: "symbolic link",
            tarfile.LNKTYPE: "hard link",
            tarfile.CHRTYPE: "character device",
            tarfile.BLKTYPE: "block device",
            tarfile.FIFOTYPE: "FIFO",
            tarfile.DIRTYPE: "directory",
        }.get(member.type)
        return f"not a regular file ({kind or 'sparse or type ' + repr(member.type)})"
    return None


def extract(
    tarball: str | os.PathLike[str],
    dest_fd: int,
    limits: Limits,
    *,
    sync: bool = True,
    checkpoint: Callable[[], None] | None = None,
) -> Extracted:
    """Write the kept members of ``tarball`` into the directory ``dest_fd``.

    ``dest_fd`` must be a fresh, empty directory.  ``checkpoint`` is called between
    chunks (a deadline check).  Raises :class:`TarballRejected`.
    """
    kept: dict[str, int] = {}
    skipped: list[str] = []
    count = 0
    written = 0
    with open(tarball, "rb") as raw:
        ahead = _Ahead(_decompressed(raw))
        stream = _Capped(ahead, limits.max_total_bytes)
        try:
            with tarfile.open(
                fileobj=stream,
                mode="r|",
                tarinfo=_CheckedInfo,  # type: ignore[call-overload]
                bufsize=CHUNK,
            ) as tar:
                while (member := tar.next()) is not None:
                    # In stream mode too tarfile keeps every member it has read, each with
                    # its pax keys: keep none.
                    tar.members.clear()
                    count += 1
                    if count > limits.max_members:
                        raise TarballRejected(
                            f"more than {limits.max_members} members (max_members)"
                        )
                    base = PurePosixPath(member.name).name
                    if base not in KEPT:
                        continue
                    why = _why_not(member)
                    if why is None and base in kept:
                        why = "a later member with the same name"
                    if why is not None:
                        skipped.append(f"{member.name!r}: {why}")
                        continue
                    if member.size > limits.max_member_bytes:
                        raise TarballRejected(
                            f"{base} is {member.size} bytes, over the cap of "
                            f"{limits.max_member_bytes} (max_member_bytes)"
                        )
                    source = tar.extractfile(member)
                    assert source is not None  # a regular file always has data
                    kept[base] = _copy(source, dest_fd, base, member.size, sync, checkpoint)
                    written += kept[base]
        except OSError as exc:
            if not _is_format_error(exc):
                raise
            raise TarballRejected(f"unreadable: {exc}") from None
        except _MALFORMED as exc:
            raise TarballRejected(f"unreadable: {exc or type(exc).__name__}") from None
        except MemoryError:
            # Nothing above reads unbounded data into memory; should tarfile still do it,
            # the archive is what is wrong.
            raise TarballRejected("unreadable: reading it ran out of memory") from None
        finally:
            ahead.close()
    if not kept:
        raise TarballRejected(
            "none of the expected members ("
            + ", ".join(sorted(KEPT))
            + ")"
            + (f"; skipped {len(skipped)} unsafe one(s)" if skipped else "")
        )
    return Extracted(sorted(kept), written, skipped)


def _is_format_error(exc: OSError) -> bool:
    # gzip and bz2 report corrupt data as OSError without an errno ("Not a gzipped file",
    # "Invalid data stream"); a real I/O error (ENOSPC, EIO) has one.
    return exc.errno is None


def _copy(
    source: IO[bytes],
    dest_fd: int,
    name: str,
    size: int,
    sync: bool,
    checkpoint: Callable[[], None] | None,
) -> int:
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        FILE_MODE,
        dir_fd=dest_fd,
    )
    try:
        os.fchmod(fd, FILE_MODE)
        done = flushed = 0
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            done += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            if sync and done - flushed >= WRITEBACK:
                atomic.start_writeback(fd, flushed, done - flushed)
                flushed = done
            if checkpoint is not None:
                checkpoint()
        if done != size:
            raise TarballRejected(f"{name}: {done} bytes where the header says {size}")
        if sync:
            os.fsync(fd)
        return done
    finally:
        os.close(fd)
