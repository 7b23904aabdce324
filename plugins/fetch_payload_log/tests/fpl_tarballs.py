"""Log tarballs for tests: honest ones, and a hostile corpus built member by member."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib

PREFIX = "tarball_PandaJob_4242_TEST-SITE/"
KEPT = ("payload.stdout", "payload.stderr", "pilotlog.txt", "pandatracerlog.txt")


def content(name: str, size: int = 0) -> bytes:
    line = f"{name}: line of a PanDA job log\n".encode()
    body = line * max(1, size // len(line) + 1)
    return body[:size] if size else line * 3


def member(
    name: str,
    data: bytes = b"",
    *,
    type: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    linkname: str = "",
    size: int | None = None,
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = type
    info.mode = mode
    info.linkname = linkname
    info.size = len(data) if size is None else size
    info.mtime = 1_700_000_000
    if type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data


def build(
    members: list[tuple[tarfile.TarInfo, bytes]],
    *,
    compress: bool = True,
    fmt: int = tarfile.PAX_FORMAT,
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w", format=fmt) as tar:
        for info, data in members:
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and info.size == len(data):
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def honest(extra: dict[str, bytes] | None = None, kept: tuple[str, ...] = KEPT) -> bytes:
    """A tarball shaped like a pilot's: a top directory, the four logs, other files."""
    members = [member(PREFIX.rstrip("/"), type=tarfile.DIRTYPE, mode=0o755)]
    for name in kept:
        members.append(member(PREFIX + name, content(name)))
    for name, data in (
        extra or {"jobReport.json": b"{}", "memory_monitor_output.txt": b"x"}
    ).items():
        members.append(member(PREFIX + name, data))
    return build(members)


def _raw_header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


def expanding(name: str, gib: float) -> bytes:
    """A member of ``gib`` GiB of zeros, as a few MB of concatenated gzip members."""
    size = int(gib * (1 << 30))
    info = tarfile.TarInfo(name)
    info.size = size
    block = 1 << 24
    zeros = gzip.compress(bytes(block), compresslevel=9)
    parts = [gzip.compress(_raw_header(info))]
    parts += [zeros] * (size // block)
    tail = size % block
    pad = (512 - size % 512) % 512
    parts.append(gzip.compress(bytes(tail + pad) + bytes(1024)))
    return b"".join(parts)


def many_members(n: int, name: str = "f") -> bytes:
    """``n`` empty members, written as raw headers (fast), then one kept log."""
    info = tarfile.TarInfo(name)
    info.size = 0
    info.mtime = 1_700_000_000
    head = bytearray(_raw_header(info))
    out = io.BytesIO()
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    for i in range(n):
        h = bytearray(head)
        label = f"{name}{i:07d}".encode()
        h[0:100] = label + bytes(100 - len(label))
        h[148:156] = b"        "
        h[148:156] = b"%06o\x00 " % sum(h)
        out.write(comp.compress(bytes(h)))
    last = build([member(PREFIX + "payload.stdout", b"end\n")], compress=False)
    out.write(comp.compress(last))
    out.write(comp.flush())
    return out.getvalue()


def lying_size(claimed: int, actual: bytes) -> bytes:
    """payload.stdout whose header claims ``claimed`` bytes; ``actual`` follows, then EOF.

    Claiming less than ``actual`` (by more than a block) makes the rest of the data be
    read as the next header; claiming more makes the archive end inside the member.
    """
    info = tarfile.TarInfo(PREFIX + "payload.stdout")
    info.size = claimed
    raw = _raw_header(info) + actual
    raw += bytes((512 - len(raw) % 512) % 512)
    if claimed < len(actual):
        raw += bytes(1024)
    return gzip.compress(raw)


def huge_pax_header() -> bytes:
    """A pax extended header announcing 2 GiB (tarfile would read it all into memory)."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 2 << 30
    return gzip.compress(_raw_header(info) + bytes(4096))


def outside_links(target: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    return [
        member("escape", type=tarfile.SYMTYPE, linkname=target),
        member("escape/payload.stdout", b"written through a link\n"),
        member(PREFIX + "payload.stderr", type=tarfile.SYMTYPE, linkname=target + "/x"),
        member(PREFIX + "pilotlog.txt", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
        member(
            PREFIX + "pandatracerlog.txt", type=tarfile.LNKTYPE, linkname=PREFIX + "payload.stdout"
        ),
    ]
