"""The cache layout on its own: atomic placement, .error bookkeeping, leftovers, locks."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from opsagent_fetch_payload_log import cache as cache_module
from opsagent_fetch_payload_log.cache import Cache, CacheError, make_job_dir, write_file


def fill(cache: Cache, slot, content: bytes) -> None:  # type: ignore[no-untyped-def]
    """Build a complete job directory holding ``content`` and swap it into place."""
    work = cache.work_area("1", "2")
    try:
        fd = make_job_dir(work.fd, "new", slot.gid)
        write_file(fd, "payload.stdout", content, sync=False)
        write_file(fd, ".done", b"payload.stdout\n", sync=False)
        os.close(fd)
        slot.install(work, "new")
    finally:
        work.close()


@pytest.fixture
def prepared(cache: Path) -> Cache:
    c = Cache(cache)
    c.prepare()
    return c


def test_a_new_job_directory_appears_whole_with_modes_2775_and_0644(prepared: Cache) -> None:
    slot = prepared.slot("1", "2")
    fill(prepared, slot, b"one\n")
    job = prepared.logs / "1" / "2"
    assert stat.S_IMODE(job.stat().st_mode) == 0o2775
    assert stat.S_IMODE((job / "payload.stdout").stat().st_mode) == 0o644
    assert slot.done() == ["payload.stdout"]
    assert os.listdir(prepared.staging) == []


def test_replacing_swaps_the_whole_directory_and_drops_the_old_one_later(
    prepared: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = prepared.slot("1", "2")
    fill(prepared, slot, b"old\n")
    job = prepared.logs / "1" / "2"
    (job / "stale.txt").write_text("from the old copy")
    held = os.open(job, os.O_RDONLY | os.O_DIRECTORY)  # a reader in the middle of a listing
    fill(prepared, slot, b"new\n")
    assert sorted(os.listdir(job)) == [".done", "payload.stdout"]
    assert (job / "payload.stdout").read_bytes() == b"new\n"
    assert sorted(os.listdir(held)) == [".done", "payload.stdout", "stale.txt"]
    os.close(held)
    assert prepared.clean_leftovers() == []
    monkeypatch.setattr(cache_module, "READER_GRACE", -1.0)
    assert [n[:4] for n in prepared.clean_leftovers()] == ["old-"]
    assert os.listdir(prepared.staging) == []


def _reader(
    path: str, stop: multiprocessing.synchronize.Event, seen: multiprocessing.Queue
) -> None:
    bad = []
    looks = 0
    while not stop.is_set():
        looks += 1
        try:
            names = set(os.listdir(path))
        except FileNotFoundError:
            bad.append("nothing there")
            continue
        if ".done" not in names:
            bad.append(f"no .done: {sorted(names)}")
    seen.put((looks, bad[:5], len(bad)))


def test_a_reader_never_sees_nothing_where_a_complete_copy_stood(prepared: Cache) -> None:
    slot = prepared.slot("1", "2")
    fill(prepared, slot, b"v0\n")
    ctx = multiprocessing.get_context("fork")
    stop, seen = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(prepared.logs / "1" / "2"), stop, seen))
    reader.start()
    try:
        for i in range(300):
            fill(prepared, slot, f"v{i}\n".encode())
    finally:
        stop.set()
        looks, bad, nbad = seen.get(timeout=10)
        reader.join(5)
    assert looks > 300
    assert nbad == 0, bad


def test_error_without_a_job_directory_creates_one_holding_only_error(prepared: Cache) -> None:
    slot = prepared.slot("1", "2")
    work = prepared.work_area("1", "2")
    slot.write_error(work, 1, "rucio: no replica for epic:x.log.tgz")
    work.close()
    job = prepared.logs / "1" / "2"
    assert os.listdir(job) == [".error"]
    assert stat.S_IMODE(job.stat().st_mode) == 0o2775
    assert stat.S_IMODE((job / ".error").stat().st_mode) == 0o644
    body = json.loads((job / ".error").read_text())
    assert list(body) == ["attempts", "last_error", "ts"]
    assert body["attempts"] == 1
    assert body["last_error"] == "rucio: no replica for epic:x.log.tgz"
    assert time.strptime(body["ts"], "%Y-%m-%dT%H:%M:%SZ")
    assert slot.attempts() == 1


def test_an_attempt_in_progress_is_not_a_failure_until_it_fails_or_dies(
    prepared: Cache,
) -> None:
    slot = prepared.slot("1", "2")
    work = prepared.work_area("1", "2")
    slot.write_error(work, 2, "rucio: no replica for epic:x.log.tgz")
    slot.write_running(work, 3, "xrdcp from root://se//x")
    job = prepared.logs / "1" / "2"
    assert sorted(os.listdir(job)) == [".error", ".running"]
    # The web view reads .error: two failures, while the third attempt runs.
    assert json.loads((job / ".error").read_text())["attempts"] == 2
    assert slot.failures() == 2
    # An attempt that died leaving .running counts as failed for the next one.
    assert slot.attempts() == 3
    slot.write_error(work, 3, "xrdcp rc=54: gone")
    work.close()
    assert os.listdir(job) == [".error"]
    assert (slot.failures(), slot.attempts()) == (3, 3)


def test_error_beside_a_complete_copy_leaves_the_copy_alone(prepared: Cache) -> None:
    slot = prepared.slot("1", "2")
    fill(prepared, slot, b"kept\n")
    work = prepared.work_area("1", "2")
    slot.write_error(work, 4, "xrdcp rc=54: gone")
    work.close()
    job = prepared.logs / "1" / "2"
    assert sorted(os.listdir(job)) == [".done", ".error", "payload.stdout"]
    assert (job / "payload.stdout").read_bytes() == b"kept\n"
    assert slot.attempts() == 4


@pytest.mark.parametrize(
    ("text", "count"),
    [("not json", 1), ('{"attempts": "3"}', 1), ('{"attempts": 2}', 2), ("[1]", 1)],
)
def test_an_unreadable_error_counts_as_one_attempt(prepared: Cache, text: str, count: int) -> None:
    job = prepared.logs / "1" / "2"
    job.mkdir(parents=True)
    (job / ".error").write_text(text)
    assert prepared.slot("1", "2").attempts() == count


def test_links_planted_at_the_job_level_are_replaced_not_followed(
    prepared: Cache, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".error").write_text("precious")
    (prepared.logs / "1").mkdir()
    (prepared.logs / "1" / "2").symlink_to(outside)
    slot = prepared.slot("1", "2")
    assert slot.done() is None and slot.attempts() == 0
    work = prepared.work_area("1", "2")
    slot.write_error(work, 1, "boom")
    work.close()
    assert not (prepared.logs / "1" / "2").is_symlink()
    assert (outside / ".error").read_text() == "precious"
    assert sorted(os.listdir(outside)) == [".error"]


def test_an_error_file_planted_as_a_link_is_replaced_not_followed(
    prepared: Cache, tmp_path: Path
) -> None:
    target = tmp_path / "victim"
    target.write_text("precious")
    job = prepared.logs / "1" / "2"
    job.mkdir(parents=True)
    (job / ".error").symlink_to(target)
    slot = prepared.slot("1", "2")
    work = prepared.work_area("1", "2")
    slot.write_error(work, 1, "boom")
    work.close()
    assert target.read_text() == "precious"
    assert not (job / ".error").is_symlink()
    assert json.loads((job / ".error").read_text())["last_error"] == "boom"


def test_a_task_directory_planted_as_a_link_is_refused(prepared: Cache, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (prepared.logs / "1").symlink_to(outside)
    with pytest.raises(CacheError, match="panda-logs/1 is not a directory .*refusing"):
        prepared.slot("1", "2")
    assert os.listdir(outside) == []


@pytest.mark.parametrize("name", [".staging", ".locks"])
def test_private_areas_planted_as_links_are_refused(cache: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (cache / "panda-logs").mkdir()
    (cache / "panda-logs" / name).symlink_to(outside)
    with pytest.raises(CacheError, match=f"{name} must be a directory of this user"):
        Cache(cache).prepare()


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from opsagent_fetch_payload_log.cache import Cache
    c = Cache(Path(sys.argv[1]))
    w = c.work_area("1", "2")
    (w.path / "log.tgz").write_bytes(b"x" * 1000)
    lock = c.job_lock("1", "2")
    lock.acquire(5)
    print(w.path.name, flush=True)
    time.sleep(60)
""")


def test_leftovers_of_a_killed_job_are_removed_and_a_live_job_is_left_alone(
    prepared: Cache,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(prepared.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        name = holder.stdout.readline().strip()  # type: ignore[union-attr]
        assert name.startswith("w-1-2-")
        assert prepared.clean_leftovers() == []
        assert os.listdir(prepared.staging) == [name]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert sorted(prepared.clean_leftovers()) == sorted([name, "1-2"])
    assert os.listdir(prepared.staging) == []
    assert os.listdir(prepared.locks) == []


def test_one_fetch_of_a_job_at_a_time(prepared: Cache) -> None:
    first = prepared.job_lock("1", "2")
    first.acquire(1)
    second = prepared.job_lock("1", "2")
    with pytest.raises(TimeoutError, match="another fetch of this job still holds"):
        second.acquire(0.2)
    got = threading.Event()
    t = threading.Thread(target=lambda: (second.acquire(5), got.set()))
    t.start()
    time.sleep(0.2)
    assert not got.is_set()
    first.release()
    t.join(5)
    assert got.is_set() and second.waited
    second.release()
    assert os.listdir(prepared.locks) == []
