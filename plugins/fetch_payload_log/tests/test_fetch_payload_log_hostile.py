"""Hostile tarballs and a hostile cache, through the whole doer (real Rucio and xrootd).

For every case: nothing is written outside the job's directory, the job directory holds
only what is allowed, and everything else on disk is back to where it was.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import fpl_tarballs as T
import pytest
from fpl_support import Rucio, tree
from opsagent import JobFailed
from opsagent.testing import structure
from opsagent_fetch_payload_log import FetchInput
from opsagent_fetch_payload_log.cache import Cache
from opsagent_fetch_payload_log.fetch import fetch

JOB = "panda-logs/1001/4242"


def corpus(outside: Path) -> dict[str, tuple[Callable[[], bytes], tuple[str, ...] | None, str]]:
    """name -> (tarball, members kept (None: the job fails), what the reason says)."""
    m = T.member
    p = T.PREFIX
    return {
        "dotdot-and-absolute": (
            lambda: T.build(
                [
                    m("../../../payload.stdout", b"up\n"),
                    m(f"{outside}/payload.stderr", b"abs\n"),
                    m("/payload.stdout", b"abs\n"),
                    m(p + "pilotlog.txt", b"pilot\n"),
                ]
            ),
            ("pilotlog.txt",),
            "",
        ),
        "symlink-and-hardlink-escapes": (
            lambda: T.build(T.outside_links(str(outside))),
            ("payload.stdout",),
            "",
        ),
        "devices-and-fifos": (
            lambda: T.build(
                [
                    m(p + "payload.stdout", type=tarfile.CHRTYPE),
                    m(p + "payload.stderr", type=tarfile.BLKTYPE),
                    m(p + "pilotlog.txt", type=tarfile.FIFOTYPE),
                    m(p + "pandatracerlog.txt", type=tarfile.DIRTYPE),
                ]
            ),
            None,
            "tarball: none of the expected members",
        ),
        "set-uid": (
            lambda: T.build(
                [
                    m(p + "payload.stdout", b"#!/bin/sh\n", mode=0o4755),
                    m(p + "payload.stderr", b"x\n", mode=0o2777),
                ]
            ),
            ("payload.stderr", "payload.stdout"),
            "",
        ),
        "200000-tiny-members": (
            lambda: T.many_members(200_000),
            None,
            "tarball: more than 10000 members (max_members)",
        ),
        "member-expanding-to-gigabytes": (
            lambda: T.expanding(p + "payload.stdout", 4),
            None,
            "tarball: payload.stdout is 4294967296 bytes, over the cap of 1073741824",
        ),
        "skipped-member-expanding-to-gigabytes": (
            lambda: T.expanding(p + "core.dump", 1.5),
            None,
            "tarball: decompresses to more than 268435456 bytes (max_total_bytes)",
        ),
        "header-lying-short": (
            lambda: T.lying_size(10, b"z" * 5000),
            None,
            "tarball: bad header at byte",
        ),
        "header-lying-long": (
            lambda: T.lying_size(1 << 20, b"z" * 100),
            None,
            "tarball: unreadable: unexpected end of data",
        ),
        "huge-pax-header": (T.huge_pax_header, None, "tarball: a pax header of 2147483648"),
        # tarfile read sparse maps whole before any check: +210 MiB from 146 KB.
        "old-gnu-sparse-map-146-kb": (
            lambda: T.old_gnu_sparse(80_000),
            None,
            "tarball: a sparse member (old GNU) 'tarball_PandaJob_4242_TEST-SITE/payload.stdout'",
        ),
        "pax-sparse-1.0-map-64-kb": (
            lambda: T.pax_sparse_1_0(1_500_000),
            None,
            "tarball: a sparse member (pax GNU.sparse 1.0)",
        ),
        "truncated-sparse-map": (
            lambda: T.old_gnu_sparse(3, truncated=True),
            None,
            "tarball: a sparse member (old GNU)",
        ),
        "5000-digit-pax-length": (
            T.pax_overlong_length,
            None,
            "tarball: unreadable: Exceeds the limit (4300 digits)",
        ),
        "2000-pax-headers-in-a-row": (
            lambda: T.pax_chain(2000),
            None,
            "tarball: more than 8 long-name or pax headers in a row",
        ),
        "not-a-tarball": (lambda: os.urandom(2000), None, "tarball: "),
    }


CASES = sorted(corpus(Path("/x")))


@pytest.fixture
def world(tmp_path: Path, cache: Path) -> Path:
    """A directory beside the cache, the target of every escape; compared before and after."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("precious\n")
    Cache(cache).prepare()
    return outside


def _snapshot(cache: Path, outside: Path) -> tuple[dict, dict]:  # type: ignore[type-arg]
    return tree(outside), {
        k: v for k, v in tree(cache).items() if not k.startswith(JOB.rsplit("/", 1)[0])
    }


@pytest.mark.parametrize("case", CASES)
def test_hostile_tarballs_write_nothing_outside_the_job_directory(
    case: str, rucio: Rucio, make_job, cache: Path, world: Path
) -> None:  # type: ignore[no-untyped-def]
    build, kept, why = corpus(world)[case]
    lfn = rucio.register(build(), name=f"panda.hostile.{case}.{time.monotonic_ns()}.log.tgz")
    before = _snapshot(cache, world)
    inp = structure(
        {"scope": rucio.scope, "lfn": lfn, "jeditaskid": "1001", "pandaid": "4242"}, FetchInput
    )
    job = make_job(rucio.config(max_total_bytes=256 << 20))
    job_dir = cache / JOB
    if kept is None:
        with pytest.raises(JobFailed) as err:
            fetch(inp, job)
        assert err.value.reason.startswith(why), err.value.reason
        assert os.listdir(job_dir) == [".error"]
        assert json.loads((job_dir / ".error").read_text())["last_error"] == err.value.reason
    else:
        out = fetch(inp, job)
        assert out.data["members"] == list(kept)
        assert sorted(os.listdir(job_dir)) == sorted([".done", *kept])
        for name in kept:
            st = (job_dir / name).lstat()
            assert st.st_mode == 0o100644, (name, oct(st.st_mode))
    assert _snapshot(cache, world) == before


def test_a_link_planted_as_the_job_directory_is_replaced_not_written_through(
    rucio: Rucio, make_job, cache: Path, world: Path
) -> None:  # type: ignore[no-untyped-def]
    (cache / "panda-logs/1001").mkdir()
    (cache / JOB).symlink_to(world)
    before = tree(world)
    lfn = rucio.register(T.honest())
    inp = structure(
        {"scope": rucio.scope, "lfn": lfn, "jeditaskid": 1001, "pandaid": 4242}, FetchInput
    )
    fetch(inp, make_job(rucio.config()))
    assert not (cache / JOB).is_symlink()
    assert sorted(os.listdir(cache / JOB)) == [".done", *sorted(T.KEPT)]
    assert tree(world) == before


def test_a_link_planted_as_the_task_directory_is_refused(
    rucio: Rucio, make_job, cache: Path, world: Path
) -> None:  # type: ignore[no-untyped-def]
    (cache / "panda-logs/1001").symlink_to(world)
    before = tree(world)
    lfn = rucio.register(T.honest())
    inp = structure(
        {"scope": rucio.scope, "lfn": lfn, "jeditaskid": 1001, "pandaid": 4242}, FetchInput
    )
    with pytest.raises(JobFailed, match="panda-logs/1001 is not a directory .*refusing"):
        fetch(inp, make_job(rucio.config()))
    assert tree(world) == before


KILLABLE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from opsagent import Job
    from opsagent import Credential
    from opsagent.testing import structure
    from opsagent_fetch_payload_log import FetchConfig, FetchInput
    from opsagent_fetch_payload_log.fetch import fetch
    a = json.loads(sys.argv[1])
    cred = Credential("x509_proxy", path=Path(a["proxy"]))
    job = Job(id="killable", msg_type="fetch_payload_log", cache_dir=Path(a["cache"]),
              time_limit=60, config=FetchConfig(**a["config"]),
              credentials={"x509_proxy": cred}, env={"PATH": os.environ["PATH"]})
    print(fetch(structure(a["input"], FetchInput), job).data, flush=True)
""")


def test_sigkill_mid_extraction_leaves_no_directory_without_done_and_the_rerun_cleans_up(
    rucio: Rucio, cache: Path, proxy_file: Path
) -> None:
    # A kept member large enough to be caught in the middle of its extraction.
    big = T.expanding(T.PREFIX + "payload.stdout", 0.375)
    lfn = rucio.register(big)
    cfg = {
        k: getattr(rucio.config(), k)
        for k in ("rucio_url", "auth_type", "account", "username", "password")
    }
    args = json.dumps(
        {
            "proxy": str(proxy_file),
            "cache": str(cache),
            "config": cfg,
            "input": {"scope": rucio.scope, "lfn": lfn, "jeditaskid": "1001", "pandaid": "4242"},
        }
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, args],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    staging = cache / "panda-logs/.staging"
    deadline = time.monotonic() + 30
    partial = None
    while time.monotonic() < deadline and partial is None:
        for work in staging.glob("w-*/new/payload.stdout") if staging.exists() else ():
            if work.stat().st_size > (1 << 20):
                partial = work
        time.sleep(0.005)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert partial is not None, victim.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    # What a reader sees: the attempt in progress, no failure counted yet, no log file
    # without .done.
    assert os.listdir(cache / JOB) == [".running"]
    body = json.loads((cache / JOB / ".running").read_text())
    assert (body["attempt"], body["step"]) == (1, f"extracting {rucio.scope}:{lfn}")
    assert any(n.startswith("w-") for n in os.listdir(staging))
    # The redelivered request cleans the leftovers and finishes the job.
    rerun = subprocess.run(
        [sys.executable, "-c", KILLABLE, args], capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(os.listdir(cache / JOB)) == [".done", "payload.stdout"]
    assert (cache / JOB / "payload.stdout").stat().st_size == 384 << 20
    assert [n for n in os.listdir(staging) if not n.startswith("old-")] == []
    shutil.rmtree(cache / "panda-logs")  # 384 MB pytest would otherwise keep
