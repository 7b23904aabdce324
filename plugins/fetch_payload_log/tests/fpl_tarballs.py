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


def _checksummed(block: bytearray) -> bytes:
    block[148:156] = b"        "
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _sparse_struct(offset: int, numbytes: int) -> bytes:
    return b"%011o\x00%011o\x00" % (offset, numbytes)


def old_gnu_sparse(extensions: int, *, truncated: bool = False) -> bytes:
    """payload.stdout as an old-GNU sparse member (type ``S``) whose map goes on for
    ``extensions`` extension blocks of 21 entries each: :mod:`tarfile` reads the whole map
    into a list before it returns the member.  ``truncated``: the archive ends in the map.
    """
    info = tarfile.TarInfo(PREFIX + "payload.stdout")
    info.size = 0
    info.mtime = 1_700_000_000
    head = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    head[156:157] = tarfile.GNUTYPE_SPARSE
    head[386:482] = _sparse_struct(0, 0) * 4
    head[482] = 1  # isextended
    head[483:495] = b"%011o\x00" % (1 << 32)  # origsize
    ext = bytearray(512)
    ext[0:504] = _sparse_struct(1 << 30, 1 << 20) * 21
    ext[504] = 1
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(_checksummed(head))]
    block = bytes(ext)
    for _ in range(extensions):
        out.append(comp.compress(block))
    if not truncated:
        ext[504] = 0
        out.append(comp.compress(bytes(ext) + bytes(1024)))
    else:
        out.append(comp.compress(block[:100]))
    out.append(comp.flush())
    return b"".join(out)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax_sparse_1_0(pairs: int, *, truncated: bool = False) -> bytes:
    """payload.stdout as a pax ``GNU.sparse`` 1.0 member whose map, at the start of its
    data, announces and holds ``pairs`` (offset, size) pairs: :mod:`tarfile` reads them all
    into a list before it returns the member.  ``truncated``: the archive ends in the map."""
    records = b"".join(
        _pax_record(k, v)
        for k, v in (
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", PREFIX + "payload.stdout"),
            ("GNU.sparse.realsize", str(1 << 40)),
        )
    )
    pax = tarfile.TarInfo("./PaxHeaders/payload.stdout")
    pax.type = tarfile.XHDTYPE
    pax.size = len(records)
    pax.mtime = 1_700_000_000
    number = b"%d\n" % (1 << 30)  # not one of the small ints Python shares
    head = b"%d\n" % pairs
    mapped = len(head) + 2 * pairs * len(number)
    data = tarfile.TarInfo("./GNUSparseFile.0/payload.stdout")
    data.size = mapped
    data.mtime = 1_700_000_000
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [
        comp.compress(_raw_header(pax) + records + bytes((512 - len(records) % 512) % 512)),
        comp.compress(_raw_header(data) + head),
    ]
    shown = pairs if not truncated else pairs // 2
    lines = number * 8192
    for _ in range(2 * shown // 8192):
        out.append(comp.compress(lines))
    out.append(comp.compress(number * (2 * shown % 8192)))
    if not truncated:
        out.append(comp.compress(bytes((512 - mapped % 512) % 512) + bytes(1024)))
    out.append(comp.flush())
    return b"".join(out)


def _pax(records: bytes, type: bytes = tarfile.XHDTYPE, name: str = "./PaxHeaders/f") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = type
    info.size = len(records)
    info.mtime = 1_700_000_000
    return _raw_header(info) + records + bytes((512 - len(records) % 512) % 512)


def pax_sparse_0(minor: int) -> bytes:
    """payload.stdout as a pax ``GNU.sparse`` 0.0 (repeated offset and numbytes keys) or
    0.1 (one ``GNU.sparse.map`` key) member."""
    if minor == 0:
        pairs = [("GNU.sparse.size", "2048")]
        pairs += [("GNU.sparse.offset", "1024"), ("GNU.sparse.numbytes", "512")] * 8
    else:
        pairs = [("GNU.sparse.size", "2048"), ("GNU.sparse.map", ",".join(["1024,512"] * 8))]
    pairs.append(("GNU.sparse.name", PREFIX + "payload.stdout"))
    data = tarfile.TarInfo("./GNUSparseFile.0/payload.stdout")
    data.size = 0
    raw = _pax(b"".join(_pax_record(k, v) for k, v in pairs)) + _raw_header(data)
    return gzip.compress(raw + bytes(1024))


def pax_overlong_length() -> bytes:
    """A pax record whose length field has 5000 digits (``int()`` refuses over 4300)."""
    records = b"9" * 5000 + b" path=x\n"
    return gzip.compress(_pax(records) + _raw_header(tarfile.TarInfo("f")) + bytes(1024))


def pax_chain(n: int) -> bytes:
    """``n`` pax headers in a row before one member (tarfile reads them recursively)."""
    one = _pax(_pax_record("comment", "x"))
    tail = build([member(PREFIX + "payload.stdout", b"x\n")], compress=False)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(one) for _ in range(n)]
    out += [comp.compress(tail), comp.flush()]
    return b"".join(out)


def pax_heavy_members(n: int, header_bytes: int = 28_000) -> bytes:
    """``n`` empty members, each after a pax header of ``header_bytes`` of distinct keys
    (under deflate's 32 KiB window, so each repeat costs a few bytes), then a kept log.
    tarfile keeps every member it has read with its pax keys, in stream mode too."""
    records = b""
    i = 0
    while len(records) < header_bytes - 16:
        records += _pax_record(f"k{i}", "")
        i += 1
    one = _pax(records) + _raw_header(tarfile.TarInfo("f"))
    tail = build([member(PREFIX + "payload.stdout", b"x\n")], compress=False)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(one) for _ in range(n)]
    out += [comp.compress(tail), comp.flush()]
    return b"".join(out)


def pax_globals(n: int, header_bytes: int = 28_000) -> bytes:
    """``n`` pax global headers of distinct keys: tarfile merges them all into one dict
    that it keeps to the end of the archive and copies into every member."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = []
    key = 0
    for _ in range(n):
        records = b""
        while len(records) < header_bytes - 16:
            records += _pax_record(f"k{key}", "")
            key += 1
        out.append(comp.compress(_pax(records, tarfile.XGLTYPE, "./PaxHeaders/global")))
    tail = build([member(PREFIX + "payload.stdout", b"x\n")], compress=False)
    out += [comp.compress(tail), comp.flush()]
    return b"".join(out)
