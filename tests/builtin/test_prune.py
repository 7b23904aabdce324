"""prune_cache: exactly the old, unheld, inside-the-cache entries go."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest
from opsagent.builtin.prune import PruneConfig, PruneInput, prune_cache
from opsagent.job import Job
from opsagent.schema import FieldError, InputError, json_schema, structure
from opsagent_fetch_payload_log.cache import Cache

OLD = time.time() - 40 * 86400


def _age(path: Path) -> None:
    """Make ``path`` and everything in it 40 days old (links themselves too)."""
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (OLD, OLD), follow_symlinks=False)
    os.utime(path, (OLD, OLD), follow_symlinks=False)


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    cache = tmp_path / "cache"
    outside = tmp_path / "outside"
    _write(outside / "precious.log", 7)
    _age(outside)
    logs = cache / "panda-logs"
    _write(logs / "100" / "1" / "payload.stdout", 1000)  # old job
    _write(logs / "100" / "1" / ".done", 10)
    _write(logs / "100" / "2" / "payload.stdout", 5)  # new job, same task
    _write(logs / "200" / "3" / "payload.stdout", 300)  # a whole old task
    _write(logs / "200" / "4" / "payload.stdout", 20)
    _write(logs / "300" / "5" / "payload.stdout", 1)  # old job holding a link out
    _write(cache / "stray.tmp", 50)  # an old leftover file in the root
    # Another area of the shared cache: the Rucio snapshots, kept however old.
    _write(cache / "rucio-snapshots" / "2026-01" / "snapshot.json", 40)
    for old in (
        logs / "100" / "1",
        logs / "200",
        logs / "300" / "5",
        cache / "stray.tmp",
        cache / "rucio-snapshots",
    ):
        _age(old)
    (logs / "300" / "5" / "out").symlink_to(outside)
    _age(logs / "300" / "5")
    (logs / "link-out").symlink_to(outside)  # a link in an area: left alone
    os.utime(logs / "link-out", (OLD, OLD), follow_symlinks=False)
    return {"cache": cache, "logs": logs, "outside": outside}


def _run(cache: Path, areas: list[str] | None = None, **inp: object) -> dict[str, object]:
    config = None if areas is None else PruneConfig(areas=areas)
    job = Job(id="t", msg_type="prune_cache", cache_dir=cache, time_limit=60, config=config)
    outcome = prune_cache(PruneInput(**inp), job)  # type: ignore[arg-type]
    assert outcome.status == "ok"
    return outcome.data


def test_by_default_only_old_panda_log_directories_go_as_the_old_cron_pruned(
    tree: dict[str, Path],
) -> None:
    cache, logs = tree["cache"], tree["logs"]
    data = _run(cache)
    assert sorted(data["removed"]) == [  # type: ignore[arg-type]
        "panda-logs/100/1/",
        "panda-logs/200/",
        "panda-logs/300/5/",
    ]
    assert (logs / "100" / "2" / "payload.stdout").exists()
    assert (cache / "stray.tmp").exists()
    assert (cache / "rucio-snapshots" / "2026-01" / "snapshot.json").exists()


def test_other_areas_only_when_configured(tree: dict[str, Path]) -> None:
    cache = tree["cache"]
    data = _run(cache, areas=["panda-logs", "rucio-snapshots"])
    assert "rucio-snapshots/2026-01/" in data["removed"]  # type: ignore[operator]
    assert (cache / "stray.tmp").exists()
    assert (cache / "rucio-snapshots").is_dir()  # an area itself stays


def test_an_area_planted_as_a_link_is_not_followed(tmp_path: Path) -> None:
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    _write(outside / "task" / "job" / "precious.log", 7)
    _age(outside)
    cache.mkdir()
    (cache / "panda-logs").symlink_to(outside)
    data = _run(cache)
    assert data["removed"] == []
    assert data["links_left"] == ["panda-logs"]
    assert (outside / "task" / "job" / "precious.log").exists()


@pytest.mark.parametrize("area", ["/etc", "../x", "panda-logs/../..", "", "a//b"])
def test_an_area_outside_the_cache_is_refused(area: str) -> None:
    with pytest.raises(FieldError):
        PruneConfig(areas=[area])


def test_old_unheld_entries_go_and_links_are_never_followed(tree: dict[str, Path]) -> None:
    cache, logs, outside = tree["cache"], tree["logs"], tree["outside"]
    data = _run(cache, areas=["."])
    assert sorted(data["removed"]) == [  # type: ignore[arg-type]
        "panda-logs/100/1/",
        "panda-logs/200/",
        "panda-logs/300/5/",
        "rucio-snapshots/2026-01/",
        "stray.tmp",
    ]
    assert data["files"] == 2 + 2 + 2 + 1 + 1
    assert data["bytes"] == 1010 + 320 + 1 + 50 + 40
    assert (logs / "100" / "2" / "payload.stdout").exists()
    assert not (logs / "100" / "1").exists()
    assert not (logs / "200").exists()
    assert not (logs / "300" / "5").exists()
    assert (outside / "precious.log").read_bytes() == b"x" * 7
    assert (logs / "link-out").is_symlink()
    assert data["links_left"] == ["panda-logs/link-out"]
    assert not [p for p in logs.rglob("*") if p.name.startswith(".pruning-")]


def test_dry_run_lists_the_same_and_removes_nothing(tree: dict[str, Path]) -> None:
    cache = tree["cache"]
    before = sorted(str(p) for p in cache.rglob("*"))
    dry = _run(cache, dry_run=True)
    assert sorted(str(p) for p in cache.rglob("*")) == before
    real = _run(cache)
    assert dry["removed"] == real["removed"]
    assert (dry["files"], dry["bytes"]) == (real["files"], real["bytes"])
    assert dry["dry_run"] is True


def test_directories_and_lock_files_a_running_job_holds_stay(tree: dict[str, Path]) -> None:
    cache, logs = tree["cache"], tree["logs"]
    # The fetch capability's own scheme: a work area (flock on the directory) and a
    # job lock (flock on the file), both held as a running fetch holds them.
    fetch = Cache(cache)
    fetch.prepare()
    work = fetch.work_area("100", "1")
    _write(work.path / "download.tar", 4)
    lock = fetch.job_lock("100", "9")
    lock.acquire(timeout=1)
    # An old job directory another job holds, and an old task holding one held job.
    held = logs / "100" / "1"
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    inner = logs / "200" / "4"
    fd2 = os.open(inner, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd2, fcntl.LOCK_EX)
    leftover = fetch.staging / "w-leftover-of-a-killed-job"
    leftover.mkdir()
    _age(leftover)
    _age(work.path)
    _age(fetch.staging)
    os.utime(lock.path, (OLD, OLD))
    try:
        data = _run(cache)
    finally:
        os.close(fd)
        os.close(fd2)
    assert held.exists() and inner.exists() and (logs / "200" / "3").exists()
    assert work.path.exists() and (work.path / "download.tar").exists()
    assert lock.path.exists()
    assert not leftover.exists()
    assert "panda-logs/100/1" in data["held"]  # type: ignore[operator]
    assert "panda-logs/200/4" in data["held"]  # type: ignore[operator]
    assert f"panda-logs/.staging/{work.path.name}" in data["held"]  # type: ignore[operator]
    assert "panda-logs/.locks/100-9" in data["held"]  # type: ignore[operator]
    assert "panda-logs/.staging/w-leftover-of-a-killed-job/" in data["removed"]  # type: ignore[operator]
    lock.release()
    work.close()


def test_a_link_as_cache_root_is_the_operators_and_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "disk2"
    _write(real / "panda-logs" / "job" / "f", 3)
    _age(real / "panda-logs" / "job")
    (tmp_path / "cache").symlink_to(real)
    data = _run(tmp_path / "cache")
    assert data["removed"] == ["panda-logs/job/"]
    assert (real / "panda-logs").is_dir()


def test_days_must_be_positive() -> None:
    with pytest.raises(FieldError, match="expected a number of days") as refused:
        PruneInput(older_than_days=0)
    assert refused.value.field == "older_than_days"


def test_a_request_cannot_prune_what_is_younger_than_a_day(tmp_path: Path) -> None:
    # The attack: older_than_days near 0 from anyone who can write to the queue deleted a
    # log cached half a second earlier.
    cache = tmp_path / "cache"
    _write(cache / "panda-logs" / "100" / "1" / "payload.stdout", 10)
    time.sleep(0.5)
    with pytest.raises(InputError) as refused:
        structure({"older_than_days": 0.00001}, PruneInput)
    assert refused.value.errors == [
        "$.older_than_days: expected a number of days >= 1, got 1e-05"
    ]
    assert (cache / "panda-logs" / "100" / "1" / "payload.stdout").exists()
    assert _run(cache, older_than_days=1)["removed"] == []
    assert json_schema(PruneInput)["properties"]["older_than_days"]["minimum"] == 1
