"""Extraction on its own: what is written, with which modes, and what is refused."""

from __future__ import annotations

import bz2
import lzma
import os
import stat
import tarfile
from pathlib import Path

import fpl_tarballs as T
import pytest
from opsagent_fetch_payload_log.extract import Limits, TarballRejected, extract

DEFAULT = Limits()


def run(tmp_path: Path, data: bytes, limits: Limits = DEFAULT) -> tuple[list[str], Path]:
    src = tmp_path / "log.tgz"
    src.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        got = extract(src, fd, limits, sync=False)
    finally:
        os.close(fd)
    return got.members, out


def test_the_four_logs_are_written_flat_with_their_bytes_and_mode_0644(tmp_path: Path) -> None:
    members, out = run(tmp_path, T.honest())
    assert members == sorted(T.KEPT)
    assert sorted(os.listdir(out)) == sorted(T.KEPT)
    for name in T.KEPT:
        assert (out / name).read_bytes() == T.content(name)
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644


def test_a_set_uid_member_is_written_without_its_special_bits(tmp_path: Path) -> None:
    data = T.build([T.member(T.PREFIX + "payload.stdout", b"#!/bin/sh\nid\n", mode=0o6755)])
    _, out = run(tmp_path, data)
    assert stat.S_IMODE((out / "payload.stdout").stat().st_mode) == 0o644


@pytest.mark.parametrize("compress", [None, bz2.compress, lzma.compress])
def test_plain_bzip2_and_xz_tarballs_are_read_too(tmp_path: Path, compress) -> None:  # type: ignore[no-untyped-def]
    raw = T.build([T.member("pilotlog.txt", b"pilot\n")], compress=False)
    members, out = run(tmp_path, compress(raw) if compress else raw)
    assert members == ["pilotlog.txt"]
    assert (out / "pilotlog.txt").read_bytes() == b"pilot\n"


def test_the_first_member_with_a_kept_name_wins(tmp_path: Path) -> None:
    data = T.build(
        [T.member("a/payload.stdout", b"first\n"), T.member("b/payload.stdout", b"second\n")]
    )
    _, out = run(tmp_path, data)
    assert (out / "payload.stdout").read_bytes() == b"first\n"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../payload.stdout", "'..'"),
        ("a/../../payload.stdout", "'..'"),
        ("/etc/payload.stdout", "absolute"),
    ],
)
def test_dangerous_names_are_never_written_even_as_a_base_name(
    tmp_path: Path, name: str, why: str
) -> None:
    with pytest.raises(TarballRejected, match="none of the expected members.*1 unsafe"):
        run(tmp_path, T.build([T.member(name, b"x\n")]))
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    "kind",
    [
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.DIRTYPE,
    ],
)
def test_members_that_are_not_regular_files_are_never_written(tmp_path: Path, kind: bytes) -> None:
    data = T.build(
        [
            T.member(T.PREFIX + "payload.stdout", type=kind, linkname="/etc/passwd"),
            T.member(T.PREFIX + "pilotlog.txt", b"kept\n"),
        ]
    )
    members, out = run(tmp_path, data)
    assert members == ["pilotlog.txt"]
    assert sorted(os.listdir(out)) == ["pilotlog.txt"]


def test_too_many_members_is_refused_before_reading_them_all(tmp_path: Path) -> None:
    with pytest.raises(TarballRejected, match="more than 1000 members"):
        run(tmp_path, T.many_members(5000), Limits(max_members=1000))


def test_a_kept_member_over_the_size_cap_is_refused_from_its_header(tmp_path: Path) -> None:
    with pytest.raises(TarballRejected, match=r"payload.stdout is 3221225472 bytes"):
        run(tmp_path, T.expanding(T.PREFIX + "payload.stdout", 3), Limits(max_member_bytes=1 << 20))
    assert os.listdir(tmp_path / "out") == []


def test_the_decompressed_stream_is_capped_even_for_skipped_members(tmp_path: Path) -> None:
    with pytest.raises(TarballRejected, match="decompresses to more than"):
        run(tmp_path, T.expanding(T.PREFIX + "core.123", 2), Limits(max_total_bytes=1 << 24))


def test_a_header_claiming_more_than_the_archive_holds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TarballRejected, match="unreadable: unexpected end of data"):
        run(tmp_path, T.lying_size(100_000, b"short\n"))


def test_a_header_claiming_less_than_its_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TarballRejected, match="bad header at byte"):
        run(tmp_path, T.lying_size(10, b"x" * 4000))


def test_a_huge_pax_header_is_refused_before_it_is_read_into_memory(tmp_path: Path) -> None:
    with pytest.raises(TarballRejected, match="a pax header of 2147483648 bytes"):
        run(tmp_path, T.huge_pax_header())


@pytest.mark.parametrize(
    "data",
    [b"", os.urandom(4000), b"\x1f\x8b" + os.urandom(100)],
    ids=["empty", "random", "broken-gzip"],
)
def test_something_that_is_not_a_tarball_is_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(TarballRejected, match="^tarball: "):
        run(tmp_path, data)


def test_a_tarball_without_the_logs_says_so(tmp_path: Path) -> None:
    with pytest.raises(TarballRejected, match="tarball: none of the expected members"):
        run(tmp_path, T.honest(kept=()))
