"""Fixtures: the operator's token (checked untouched after every test), the fakes, a cache,
and two real Unix users of one group (the operator and a hostile group member)."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import (
    COMMAND,
    OPERATOR,
    OPS_GROUP,
    PEER,
    TASK,
    OperatorToken,
    UnixUsers,
    private_dirs,
    token_file_bytes,
)


@pytest.fixture
def operator_token(tmp_path: Path) -> Iterator[OperatorToken]:
    """The operator's ``$PANDA_CONFIG_ROOT/.token``; after the test: same bytes, same mtime."""
    d = tmp_path / "operator-panda"
    d.mkdir(mode=0o700)
    raw, id_token = token_file_bytes()
    path = d / ".token"
    path.write_bytes(raw)
    path.chmod(0o600)
    tok = OperatorToken(path, id_token, raw, path.stat().st_mtime_ns)
    yield tok
    tok.assert_untouched()


@pytest.fixture
def panda(operator_token: OperatorToken) -> Iterator[FakePanda]:
    with FakePanda(id_tokens=(operator_token.id_token,)) as fake:
        yield fake


@pytest.fixture
def pcs() -> Iterator[FakeCatalogue]:
    with FakeCatalogue() as fake:
        fake.add_task(TASK, COMMAND)
        yield fake


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    """The cache root.  After the test: nothing of submit_task's in the shared cache (its
    sandboxes are private directories), and no private directory of this process left."""
    root = tmp_path / "cache"
    root.mkdir()
    yield root
    assert not (root / "submit").exists(), "a sandbox in the shared cache"
    assert private_dirs(os.getpid()) == [], "private sandboxes left behind"


@pytest.fixture(scope="session")
def unix_users() -> UnixUsers:
    """The group and its two users, created when missing (needs root, as the tests run)."""
    if os.geteuid() != 0:
        pytest.skip("creating the operator's and a peer's Unix users needs root")
    subprocess.run(["groupadd", "-f", OPS_GROUP], check=True)  # noqa: S607
    for name in (OPERATOR, PEER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(  # noqa: S603
                [
                    "useradd",
                    "--no-create-home",
                    "--gid",
                    OPS_GROUP,
                    "--shell",  # noqa: S607
                    "/usr/sbin/nologin",
                    name,
                ],
                check=True,
            )
    return UnixUsers(OPS_GROUP, grp.getgrnam(OPS_GROUP).gr_gid, OPERATOR, PEER)
