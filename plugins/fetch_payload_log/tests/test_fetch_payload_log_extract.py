"""Extraction on its own: what is written, with which modes, and what is refused."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import fpl_tarballs as T
import pytest
from opsagent_fetch_payload_log.extract import Limits, TarballRejected, _CheckedInfo, extract

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


#: The hostile tarballs of the review: a 146 KB old-GNU sparse map took the extracting
#: process from 27 to 210 MiB, a 64 KB pax GNU.sparse 1.0 map to 156 MiB.
OLD_GNU_146K = 80_000  # extension blocks: ~150 KB compressed, a map of 1.7 M entries
PAX_1_0_64K = 1_500_000  # pairs: ~64 KB compressed

SPARSE = {
    "old-gnu-146k": (lambda: T.old_gnu_sparse(OLD_GNU_146K), "old GNU"),
    "old-gnu-truncated-map": (lambda: T.old_gnu_sparse(3, truncated=True), "old GNU"),
    "pax-1.0-64k": (lambda: T.pax_sparse_1_0(PAX_1_0_64K), "pax GNU.sparse 1.0"),
    "pax-1.0-truncated-map": (lambda: T.pax_sparse_1_0(1000, truncated=True), "pax GNU.sparse 1.0"),
    "pax-0.0": (lambda: T.pax_sparse_0(0), "pax GNU.sparse 0.0"),
    "pax-0.1": (lambda: T.pax_sparse_0(1), "pax GNU.sparse 0.1"),
}


@pytest.mark.parametrize("case", sorted(SPARSE))
def test_sparse_members_are_refused_before_their_map_is_read(tmp_path: Path, case: str) -> None:
    build, kind = SPARSE[case]
    with pytest.raises(TarballRejected) as err:
        run(tmp_path, build())
    assert str(err.value).startswith(f"tarball: a sparse member ({kind}) "), err.value
    assert str(err.value).endswith("sparse files are not accepted")
    assert os.listdir(tmp_path / "out") == []


def test_a_pax_global_header_with_a_sparse_key_is_refused(tmp_path: Path) -> None:
    glob = T._pax(T._pax_record("GNU.sparse.realsize", "1099511627776"), tarfile.XGLTYPE)
    data = gzip.compress(glob + T.build([T.member("payload.stdout", b"x\n")], compress=False))
    with pytest.raises(TarballRejected, match=r"a sparse member \(pax GNU.sparse.realsize\)"):
        run(tmp_path, data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (T.pax_overlong_length, "unreadable: Exceeds the limit (4300 digits)"),
        (lambda: T.pax_chain(2000), "more than 8 long-name or pax headers in a row"),
        (lambda: T.pax_globals(300), "pax global headers of more than 65536 bytes in all"),
    ],
    ids=["5000-digit-pax-length", "2000-pax-headers-in-a-row", "300-pax-global-headers"],
)
def test_malformed_headers_are_a_rejection_not_an_exception(
    tmp_path: Path, data: Callable[[], bytes], why: str
) -> None:
    # Before: ValueError, RecursionError and RecursionError escaped from tarfile.
    with pytest.raises(TarballRejected) as err:
        run(tmp_path, data())
    assert str(err.value).startswith(f"tarball: {why}"), err.value


def test_tarfile_still_calls_the_hooks_the_header_checks_override() -> None:
    # extract._CheckedInfo refuses sparse maps in these: were one renamed, a map would be
    # read again (the tests above would see it too, more slowly).
    for hook in (
        "fromtarfile",
        "_proc_member",
        "_proc_sparse",
        "_proc_gnusparse_00",
        "_proc_gnusparse_01",
        "_proc_gnusparse_10",
        "_apply_pax_info",
    ):
        assert hook in vars(tarfile.TarInfo), hook
        assert hook in vars(_CheckedInfo), hook


MEASURED = textwrap.dedent("""
    import json, os, resource, sys
    from opsagent_fetch_payload_log.extract import Limits, TarballRejected, extract

    def peak_kib():  # this process's peak RSS (ru_maxrss would count its parent's too)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    src, out, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    before = peak_kib()
    try:
        result = {"members": extract(src, fd, Limits(), sync=False).members}
    except TarballRejected as exc:
        result = {"rejected": str(exc)}
    except MemoryError:
        result = {"rejected": "MemoryError"}
    after = peak_kib()
    result["before_kib"], result["grew_kib"] = before, after - before
    print(json.dumps(result))
""")
#: The extracting process's address space (a Python with the decompressing thread needs
#: ~170 MiB of it for an honest tarball) and how much its resident memory may grow.
ADDRESS_SPACE = 640 << 20
MAX_GROWTH_KIB = 48 * 1024


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("old-gnu-146k", "tarball: a sparse member (old GNU)"),
        ("pax-1.0-64k", "tarball: a sparse member (pax GNU.sparse 1.0)"),
        ("500-members-with-28k-pax-headers", None),
        ("honest", None),
    ],
)
def test_hostile_headers_leave_the_extracting_process_memory_flat(
    tmp_path: Path, case: str, expect: str | None
) -> None:
    builders = {
        **{name: build for name, (build, _) in SPARSE.items()},
        "500-members-with-28k-pax-headers": lambda: T.pax_heavy_members(500),
        "honest": T.honest,
    }
    data = builders[case]()
    src = tmp_path / "log.tgz"
    src.write_bytes(data)
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, str(src), str(tmp_path / "out"), str(ADDRESS_SPACE)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    print(
        f"{case}: {len(data) / 1024:.0f} KiB, RSS {got['before_kib'] / 1024:.0f} MiB "
        f"+{got['grew_kib'] / 1024:.1f} MiB: {got.get('rejected') or got.get('members')}"
    )
    if expect is None:
        assert "members" in got, got
    else:
        assert got.get("rejected", "").startswith(expect), got
    assert got["grew_kib"] < MAX_GROWTH_KIB, got
