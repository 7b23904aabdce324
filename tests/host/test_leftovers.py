"""What a killed host's jobs left running is found and killed, and nothing else is; the state
directory they are recorded in is private."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from opsagent.isolation import proc


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True,  # noqa: S607
                            env={**os.environ, **(env or {})})


def test_a_recorded_group_is_killed_and_forgotten(tmp_path: Path) -> None:
    book = proc.GroupBook(tmp_path / "running")
    p = _sleeper()
    book.add(p.pid, "job-1")
    assert (tmp_path / "running" / str(p.pid)).read_text().split() == [
        str(proc.start_time(p.pid)), "job-1"]
    assert book.kill_left() == {p.pid: "job-1"}
    assert p.wait(5) == -9
    assert list((tmp_path / "running").iterdir()) == []


def test_a_reused_pid_is_not_killed(tmp_path: Path) -> None:
    """The record's start time is not the live process's: the pid was reused."""
    book = proc.GroupBook(tmp_path / "running")
    p = _sleeper()
    try:
        started = proc.start_time(p.pid)
        assert started is not None
        (tmp_path / "running" / str(p.pid)).write_text(f"{started - 1} job-old\n")
        assert book.kill_left() == {}
        assert p.poll() is None
        assert list((tmp_path / "running").iterdir()) == []
    finally:
        p.kill()
        p.wait()


def test_marked_programs_are_found_by_their_environment_only(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    mine = _sleeper({proc.MARK: state, proc.MARK_JOB: "job-2"})
    other = _sleeper({proc.MARK: state + "-other"})
    plain = _sleeper()
    try:
        assert proc.marked(state) == {mine.pid: "job-2"}
        assert proc.kill_marked(state) == {mine.pid: "job-2"}
        assert mine.wait(5) == -9
        assert other.poll() is None and plain.poll() is None
    finally:
        for p in (other, plain):
            p.kill()
            p.wait()


def test_the_state_directory_is_private_whatever_the_umask(tmp_path):
    from opsagent.host.daemon import private_state_dir

    old = os.umask(0o002)  # the unit's UMask: the cache is shared with the group
    try:
        made = tmp_path / "new" / "state"
        private_state_dir(made)
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o775)
        os.chmod(loose, 0o775)
        private_state_dir(loose)
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
