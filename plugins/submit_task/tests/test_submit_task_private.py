"""The operator's token copy is out of reach of the operator's group and leaves no trace on
disk: the sandbox is a private directory, never in the shared cache.

The attack runs as two real Unix users of one group (``unix_users``): the operator runs
the job process (``opsagent.testing.start_job_process``, as the host does, with the
unit's ``UMask=0002``), a peer plants links in the group-writable cache beforehand and
reads what it can after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opsagent import Credential, testing
from opsagent.testing import processes_with_env
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import (
    CAPABILITY,
    TASK,
    OperatorToken,
    UnixUsers,
    config_table,
    private_dirs,
    prun_mark,
    start_job_process,
    token_file_bytes,
    wait_until,
)

#: The interpreter the other users may run (the test's own lives under /root).
SYSTEM_PYTHON = "/usr/bin/python3"

#: The peer: plants links where the old sandbox went, holds a world-writable .token
#: open, and after the job reads the held file and every file of the cache it can.
PEER = """
import json, os, sys
submit, job_id = sys.argv[1], sys.argv[2]
os.symlink(".", os.path.join(submit, job_id))
os.symlink(".", os.path.join(submit, "panda"))
fd = os.open(os.path.join(submit, ".token"), os.O_RDWR | os.O_CREAT, 0o666)
os.fchmod(fd, 0o666)
print("planted", flush=True)
sys.stdin.readline()
os.lseek(fd, 0, 0)
held = os.read(fd, 1 << 20)
readable = {}
for root, dirs, files in os.walk(os.path.dirname(submit)):
    for name in files:
        try:
            with open(os.path.join(root, name), "rb") as f:
                readable[os.path.join(root, name)] = f.read(1 << 20).hex()
        except OSError:
            pass
print(json.dumps({"held": held.hex(), "readable": readable}), flush=True)
"""

#: A prun that reads the token as panda-client would and reports an id when it could.
SH_PRUN = """#!/bin/sh
grep -q id_token "$PANDA_CONFIG_ROOT/.token" && echo "INFO : succeeded. new jediTaskID=4242"
"""


@pytest.fixture
def shared(unix_users: UnixUsers) -> Iterator[Path]:
    """A directory both users can reach (the test's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="opsagent-shared-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def _as(path: Path, owner: str, group: str, mode: int) -> None:
    shutil.chown(path, user=owner, group=group)
    path.chmod(mode)


def test_a_group_member_cannot_read_the_token_through_links_planted_in_the_cache(
    unix_users: UnixUsers, shared: Path, pcs: FakeCatalogue, panda: FakePanda
) -> None:
    op, ops = unix_users.operator, unix_users.group
    raw, id_token = token_file_bytes(sub=str(uuid.uuid4()))
    # The shared cache as the unit leaves it: setgid, group-writable, and the submit/
    # directory an earlier job made under UMask=0002.
    submit = shared / "cache" / "submit"
    home = shared / "op"
    for path, mode in (
        (submit.parent, 0o2775),
        (submit, 0o2775),
        (home, 0o700),
        (home / "panda", 0o700),
        (home / "state", 0o700),
    ):
        path.mkdir()
        _as(path, op, ops, mode)
    token = home / "panda" / ".token"
    token.write_bytes(raw)
    _as(token, op, ops, 0o600)
    panda_sys = shared / "panda-sys" / "bin"
    panda_sys.mkdir(parents=True)
    (panda_sys / "prun").write_text(SH_PRUN)
    (panda_sys / "prun").chmod(0o755)

    peer = subprocess.Popen(  # noqa: S603
        [SYSTEM_PYTHON, "-c", PEER, str(submit), "req-7"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **unix_users.as_user(unix_users.peer),  # type: ignore[arg-type]
    )
    assert peer.stdout is not None and peer.stdin is not None
    assert peer.stdout.readline().strip() == "planted"

    # The job process of the host, as the operator, with this venv's packages.
    job = testing.start_job_process(
        CAPABILITY,
        {"task_name": TASK, "owner": "alice"},
        cache_dir=shared / "cache",
        state_dir=home / "state",
        config=config_table(pcs, panda, panda_sys=str(shared / "panda-sys")),
        credentials={"panda_oidc_token": Credential("panda_oidc_token", path=token)},
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        job_id="req-7",
        python=SYSTEM_PYTHON,
        stderr=subprocess.PIPE,
        **unix_users.as_user(op),
    )
    _, stderr = job.proc.communicate(timeout=120)
    assert job.proc.returncode == 0, stderr.decode()[-3000:]
    outcome = job.outcome()

    peer.stdin.write("go\n")
    peer.stdin.flush()
    seen = json.loads(peer.stdout.readline())
    peer.wait(timeout=30)

    secret = id_token.encode()
    assert secret not in bytes.fromhex(seen["held"]), "the peer read the token it held open"
    leaked = [p for p, data in seen["readable"].items() if secret in bytes.fromhex(data)]
    assert leaked == [], f"the peer read the token from {leaked}"
    # The job was not diverted: it ran with its token and recorded the id.
    assert (outcome["status"], outcome["data"]) == ("ok", {"jedi_task_id": "4242"}), outcome
    assert pcs.tasks[TASK]["panda_task_id"] == 4242
    # The planted links were neither followed nor used: the cache is as the peer left it.
    assert sorted(p.name for p in submit.iterdir()) == [".token", "panda", "req-7"]
    assert (submit / ".token").read_bytes() == b""
    assert private_dirs() == [] or all(
        p.stat().st_uid != unix_users.uid(op) for p in private_dirs()
    )


# -- a killed job leaves no copy on disk --------------------------------------------------


def _files_holding(secret: bytes, roots: list[Path], skip: set[Path]) -> list[Path]:
    """The regular files under ``roots`` (links not followed) whose bytes hold ``secret``."""
    found = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath, name)
                try:
                    st = path.lstat()
                    if path in skip or not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 22:
                        continue  # a FIFO or a socket would block or fail
                    if secret in path.read_bytes():
                        found.append(path)
                except OSError:
                    continue  # gone meanwhile, or not readable
    return found


def test_a_killed_job_leaves_no_copy_of_the_token_on_disk(
    pcs: FakeCatalogue, operator_token: OperatorToken, panda: FakePanda, tmp_path: Path
) -> None:
    operator_token.rewrite(*token_file_bytes(sub=str(uuid.uuid4())))  # bytes of its own
    panda.id_tokens.add(operator_token.id_token)
    secret = operator_token.id_token.encode()
    panda.hang_after_accept = True  # the job dies while prun waits on PanDA
    table = config_table(pcs, panda)
    first = start_job_process(tmp_path, table, operator_token.path)
    wait_until("PanDA to have the task", lambda: panda.tasks)
    job_pid = first.proc.pid
    first.kill9()
    for pid in processes_with_env(prun_mark(panda)):  # as the restarted host does
        os.kill(pid, signal.SIGKILL)

    on_disk = _files_holding(
        secret,
        [tmp_path, Path("/tmp"), Path("/var/tmp")],  # the cache and state dirs are under tmp_path
        skip={operator_token.path},
    )
    assert on_disk == [], f"token copies left on disk: {on_disk}"
    # What is left is on tmpfs, in a directory only this user can enter...
    # (the job's own copy of its credentials, and prun's sandbox; any other job of this
    # user that starts meanwhile -- a late one of an earlier test -- may already have
    # swept them, the killed job being gone).
    left = private_dirs(job_pid)
    for each in left:
        assert (each.stat().st_mode & 0o777, each.stat().st_uid) == (0o700, os.geteuid())
    if left:
        assert any(secret in p.read_bytes() for d in left for p in d.rglob("*") if p.is_file())

    # ...until the next job of this user: it is removed, the killed job being gone.
    second = start_job_process(tmp_path, table, operator_token.path, attempt=2, interrupted=True)
    assert second.outcome()["status"] == "ok"
    assert private_dirs(job_pid) == []
    assert _files_holding(secret, [Path("/dev/shm")], skip=set()) == []
