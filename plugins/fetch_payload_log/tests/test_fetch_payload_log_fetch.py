"""The doer end to end against the real Rucio and xrootd servers.

Needs ``scripts/services.sh start xrootd rucio``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import fpl_tarballs as T
import pytest
from fpl_support import Rucio, SilentServer, expired_proxy, processes_mentioning, tree
from opsagent import JobFailed, Outcome
from opsagent.testing import structure
from opsagent_fetch_payload_log import FetchInput
from opsagent_fetch_payload_log.fetch import fetch


def request(rucio: Rucio, lfn: str, **extra: Any) -> FetchInput:
    return structure(
        {"scope": rucio.scope, "lfn": lfn, "jeditaskid": "1001", "pandaid": "4242", **extra},
        FetchInput,
    )


def error_of(cache: Path) -> dict[str, Any]:
    return json.loads((cache / "panda-logs/1001/4242/.error").read_text())


def fails(job, inp) -> JobFailed:  # type: ignore[no-untyped-def]
    with pytest.raises(JobFailed) as err:
        fetch(inp, job)
    return err.value


def test_a_log_is_fetched_and_laid_out_byte_for_byte(rucio: Rucio, make_job, cache: Path) -> None:  # type: ignore[no-untyped-def]
    lfn = rucio.register(T.honest())
    out = fetch(request(rucio, lfn), make_job(rucio.config()))
    job_dir = cache / "panda-logs" / "1001" / "4242"
    assert out == Outcome.ok(path=str(job_dir), members=sorted(T.KEPT), cached=False)
    expected = {name: ("file", 0o644, T.content(name)) for name in T.KEPT}
    expected[".done"] = (
        "file",
        0o644,
        b"pandatracerlog.txt,payload.stderr,payload.stdout,pilotlog.txt\n",
    )
    assert tree(job_dir) == expected
    assert oct(job_dir.stat().st_mode & 0o7777) == oct(0o2775)
    assert os.listdir(cache / "panda-logs" / ".locks") == []
    assert [
        n for n in os.listdir(cache / "panda-logs" / ".staging") if not n.startswith("old-")
    ] == []


def test_a_cached_log_is_answered_without_fetching(
    rucio: Rucio, make_job, cache: Path, xrootd
) -> None:  # type: ignore[no-untyped-def]
    lfn = rucio.register(T.honest())
    job = make_job(rucio.config())
    fetch(request(rucio, lfn), job)
    (xrootd.data / xrootd.area / lfn).unlink()  # a second fetch would fail now
    again = fetch(request(rucio, lfn), job)
    assert again.data["cached"] is True
    assert again.data["members"] == sorted(T.KEPT)


def test_force_fetches_again_and_replaces_the_copy(
    rucio: Rucio, make_job, cache: Path, xrootd
) -> None:  # type: ignore[no-untyped-def]
    lfn = rucio.register(T.honest())
    job = make_job(rucio.config())
    fetch(request(rucio, lfn), job)
    xrootd.put(lfn, T.build([T.member("pilotlog.txt", b"second version\n")]))
    out = fetch(request(rucio, lfn, force=True), job)
    job_dir = cache / "panda-logs" / "1001" / "4242"
    assert out.data == {"path": str(job_dir), "members": ["pilotlog.txt"], "cached": False}
    assert sorted(os.listdir(job_dir)) == [".done", "pilotlog.txt"]
    assert (job_dir / "pilotlog.txt").read_bytes() == b"second version\n"


def test_an_unknown_did_fails_and_counts_attempts(rucio: Rucio, make_job, cache: Path) -> None:  # type: ignore[no-untyped-def]
    job = make_job(rucio.config())
    inp = request(rucio, "panda.nobody.registered.this.log.tgz")
    for attempt in (1, 2, 3):
        err = fails(job, inp)
        reason = f"rucio: unknown DID {rucio.scope}:panda.nobody.registered.this.log.tgz"
        assert err.reason == reason
        assert err.data == {"error": reason, "attempts": attempt}
        body = error_of(cache)
        assert (body["attempts"], body["last_error"]) == (attempt, reason)
    assert os.listdir(cache / "panda-logs/1001/4242") == [".error"]


def test_a_file_without_an_available_replica_fails(rucio: Rucio, make_job, cache: Path) -> None:  # type: ignore[no-untyped-def]
    blocked = rucio.add_rse("root", "127.0.0.1", 1094)
    lfn = f"panda.unavailable.{os.getpid()}.{time.monotonic_ns()}.log.tgz"
    rucio.register_elsewhere(lfn, f"root://127.0.0.1:1094//nowhere/{lfn}", rse=blocked)
    rucio.client.update_rse(blocked, {"availability_read": False})
    err = fails(make_job(rucio.config()), request(rucio, lfn))
    assert err.reason == f"rucio: no replica for {rucio.scope}:{lfn}"
    assert error_of(cache)["attempts"] == 1


def test_an_xrdcp_failure_is_recorded_with_its_status(
    rucio: Rucio, make_job, cache: Path, xrootd
) -> None:  # type: ignore[no-untyped-def]
    lfn = f"panda.lost.{time.monotonic_ns()}.log.tgz"
    rucio.register_elsewhere(lfn, f"{xrootd.url}//{xrootd.area}/lost/{lfn}")
    err = fails(make_job(rucio.config()), request(rucio, lfn))
    assert err.reason.startswith("xrdcp rc=54: ")
    assert "no such file or directory" in err.reason
    assert error_of(cache) | {"ts": None} == {"attempts": 1, "last_error": err.reason, "ts": None}
    assert [n for n in os.listdir(cache / "panda-logs/.staging") if n.startswith("w-")] == []


def test_a_silent_endpoint_is_cut_at_the_copy_limit(
    rucio: Rucio, make_job, cache: Path, silent_server: SilentServer
) -> None:  # type: ignore[no-untyped-def]
    rse = rucio.add_rse("root", "127.0.0.1", silent_server.port)
    lfn = f"panda.hung.{time.monotonic_ns()}.log.tgz"
    rucio.register_elsewhere(lfn, f"root://127.0.0.1:{silent_server.port}//hung/{lfn}", rse=rse)
    started = time.monotonic()
    err = fails(make_job(rucio.config(xrdcp_timeout=1.5)), request(rucio, lfn))
    assert time.monotonic() - started < 6
    assert err.reason == (
        f"xrdcp: no complete copy of root://127.0.0.1:{silent_server.port}"
        f"//hung/{lfn} within 1.5 s (xrdcp_timeout); killed"
    )
    assert error_of(cache)["last_error"] == err.reason
    assert processes_mentioning(f"127.0.0.1:{silent_server.port}") == []


def test_a_tarball_over_the_size_cap_is_not_copied(rucio: Rucio, make_job, cache: Path) -> None:  # type: ignore[no-untyped-def]
    lfn = rucio.register(T.honest())
    err = fails(make_job(rucio.config(max_tarball_bytes=100)), request(rucio, lfn))
    assert err.reason.startswith(f"rucio: {rucio.scope}:{lfn} is ")
    assert err.reason.endswith("over the cap of 100 (max_tarball_bytes)")


def test_an_expired_proxy_stops_the_job_before_any_work(
    rucio: Rucio, make_job, cache: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    lfn = rucio.register(T.honest())
    err = fails(make_job(rucio.config(), proxy=expired_proxy(tmp_path)), request(rucio, lfn))
    assert "expired at" in err.reason and err.data["attempts"] == 0
    assert os.listdir(cache) == []


def test_success_after_failures_clears_the_error(
    rucio: Rucio, make_job, cache: Path, xrootd
) -> None:  # type: ignore[no-untyped-def]
    lfn = f"panda.later.{time.monotonic_ns()}.log.tgz"
    rucio.register_elsewhere(lfn, f"{xrootd.url}//{xrootd.area}/{lfn}")
    job = make_job(rucio.config())
    fails(job, request(rucio, lfn))
    fails(job, request(rucio, lfn))
    assert error_of(cache)["attempts"] == 2
    xrootd.put(lfn, T.honest())
    fetch(request(rucio, lfn), job)
    assert sorted(os.listdir(cache / "panda-logs/1001/4242")) == [".done", *sorted(T.KEPT)]


def test_two_requests_for_one_job_at_once_make_one_fetch(
    rucio: Rucio, make_job, cache: Path
) -> None:  # type: ignore[no-untyped-def]
    lfn = rucio.register(T.honest())
    job = make_job(rucio.config())
    results: list[Outcome] = []
    go = threading.Barrier(2)

    def one(force: bool) -> None:
        go.wait()
        results.append(fetch(request(rucio, lfn, force=force), job))

    threads = [threading.Thread(target=one, args=(f,)) for f in (True, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.data["cached"] for r in results) == [False, True]


def test_selftest_checks_the_rucio_login_and_the_cache_without_writing(
    rucio: Rucio, make_job, cache: Path
) -> None:  # type: ignore[no-untyped-def]
    from opsagent_fetch_payload_log import capability_checks, declaration

    def checks(job) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
        found: list[Any] = []
        capability_checks(capability=declaration(), job=job, register=found.append)
        return {c.name: (c.status, c.detail) for c in found}

    assert checks(make_job(rucio.config())) == {
        "rucio": ("ok", f"logged in to {rucio.url} as {rucio.account} (userpass)"),
        "cache": ("ok", f"{cache}/panda-logs does not exist yet; the first job creates it"),
    }
    assert os.listdir(cache) == []
    (cache / "panda-logs").mkdir()
    (cache / "panda-logs" / ".staging").symlink_to("/tmp")
    bad = checks(make_job(rucio.config(password="wrong")))
    assert bad["rucio"][0] == "fail" and "CannotAuthenticate" in bad["rucio"][1]
    assert (
        bad["cache"][0] == "fail" and ".staging must be a directory of this user" in bad["cache"][1]
    )
