"""Putting a finished directory in place so that a reader sees the old one or the new one.

``rename(2)`` cannot replace a non-empty directory, and removing the old one first
leaves a moment with nothing there.  Linux's ``renameat2(2)`` does both cases right:
``RENAME_NOREPLACE`` when the place is free, ``RENAME_EXCHANGE`` to swap the new
directory with whatever stands there (which then sits where the new one was, to be
removed at leisure).  Python does not expose it, so it is called through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from loguru import logger

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    _renameat2.restype = ctypes.c_int


def renameat2(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str, flags: int) -> None:
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available in this C library")
    if _renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def place(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> bool:
    """Move ``src`` to ``dst``; if ``dst`` exists, swap the two.

    Returns True when something was displaced: it is now at ``src``.  Never follows a
    symbolic link at ``dst``: a link there is swapped out like anything else.
    """
    try:
        renameat2(src_dir_fd, src, dst_dir_fd, dst, RENAME_NOREPLACE)
        return False
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        return _place_without_renameat2(src_dir_fd, src, dst_dir_fd, dst)
    try:
        renameat2(src_dir_fd, src, dst_dir_fd, dst, RENAME_EXCHANGE)
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        return _place_without_renameat2(src_dir_fd, src, dst_dir_fd, dst)
    return True


def _place_without_renameat2(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> bool:
    # A filesystem without renameat2 flags (some network filesystems): there is a
    # moment with nothing at dst.  Said once per use so that an operator can notice.
    logger.warning("renameat2 flags unsupported here: replacing {} is not atomic", dst)
    aside = f"{src}.displaced"
    try:
        os.rename(dst, aside, src_dir_fd=dst_dir_fd, dst_dir_fd=src_dir_fd)
        displaced = True
    except FileNotFoundError:
        displaced = False
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
    if displaced:
        os.rename(aside, src, src_dir_fd=src_dir_fd, dst_dir_fd=src_dir_fd)
    return displaced


_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting for it.

    A file written this way while it is being produced leaves little for the final
    ``fsync`` to wait for (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; a no-op
    elsewhere).
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
