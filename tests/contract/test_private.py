"""``opsagent.private``: a job's private directory is made and removed without following a
link, is 0700 whatever the umask, lives on a base that is safe, and a killed job's is
removed by the next one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from opsagent.job import Job
from opsagent.private import PREFIX, PrivateDirError, private_dir


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    """A ``RuntimeDirectory=`` as systemd makes it: the service user's, 0755."""
    d = tmp_path / "run"
    d.mkdir(mode=0o755)
    return d


def test_the_directory_and_what_it_holds_are_private_whatever_the_umask(runtime: Path) -> None:
    old = os.umask(0o002)
    try:
        with private_dir({"RUNTIME_DIRECTORY": str(runtime)}) as box:
            sub = box.mkdir("panda")
            secret = sub.write(".token", b"s3cret")
            assert box.path.parent == runtime and box.path.name.startswith(
                f"{PREFIX}{os.getpid()}-"
            )
            for path, mode in ((box.path, 0o700), (sub.path, 0o700), (secret, 0o600)):
                assert stat.S_IMODE(path.stat().st_mode) == mode, path
            assert secret.read_bytes() == b"s3cret"
            with pytest.raises(FileExistsError):
                sub.write(".token", b"again")  # never written through what is there
    finally:
        os.umask(old)
    assert list(runtime.iterdir()) == []


def test_two_directories_are_never_the_same(runtime: Path) -> None:
    env = {"RUNTIME_DIRECTORY": str(runtime)}
    with private_dir(env) as a, private_dir(env) as b:
        assert a.path != b.path


def test_removal_does_not_follow_a_link_inside(runtime: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    with private_dir({"RUNTIME_DIRECTORY": str(runtime)}) as box:
        (box.path / "link").symlink_to(outside)
    assert (outside / "keep").read_text() == "precious"
    assert list(runtime.iterdir()) == []


@pytest.mark.parametrize("how", ["a link", "group-writable", "another user's"])
def test_an_unsafe_runtime_directory_is_refused_not_replaced(
    how: str, runtime: Path, tmp_path: Path
) -> None:
    base = runtime
    if how == "a link":
        base = tmp_path / "link"
        base.symlink_to(runtime)
    elif how == "group-writable":
        runtime.chmod(0o775)
    else:
        os.chown(runtime, 65534, -1)
    with (
        pytest.raises(PrivateDirError, match=str(base)),
        private_dir({"RUNTIME_DIRECTORY": str(base)}),
    ):
        pass


def test_without_a_runtime_directory_it_is_on_tmpfs_and_not_in_the_cache(tmp_path: Path) -> None:
    job = Job(id="j", msg_type="m", cache_dir=tmp_path, time_limit=1, env={})
    with job.private_dir() as box:
        assert box.path.parent == Path(os.environ.get("XDG_RUNTIME_DIR") or "/dev/shm")
        assert tmp_path not in box.path.parents


def test_a_killed_jobs_directory_is_removed_by_the_next_one_not_a_live_ones(
    runtime: Path,
) -> None:
    env = {"RUNTIME_DIRECTORY": str(runtime)}
    # A job process made one and was SIGKILLed.
    code = (
        "import os, sys, time\n"
        "from opsagent.private import private_dir\n"
        "with private_dir({'RUNTIME_DIRECTORY': sys.argv[1]}) as box:\n"
        "    box.write('.token', b'x'); print(box.path, flush=True); time.sleep(60)\n"
    )
    killed = subprocess.Popen(
        [sys.executable, "-c", code, str(runtime)], stdout=subprocess.PIPE, text=True
    )
    assert killed.stdout is not None
    left = Path(killed.stdout.readline().strip())
    killed.kill()
    killed.wait()
    assert (left / ".token").exists()
    with private_dir(env) as live:
        assert not left.exists()  # swept
        with private_dir(env):
            assert live.path.exists()  # this process lives: left alone
