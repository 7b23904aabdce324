"""Fixtures: the operator's token (checked untouched after every test), the fakes, a cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from submit_task_fakes import FakeCatalogue, FakePanda
from submit_task_support import COMMAND, TASK, OperatorToken, token_file_bytes


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
    """The cache root; after the test no sandbox may be left under ``submit/``."""
    root = tmp_path / "cache"
    root.mkdir()
    yield root
    left = sorted(p.name for p in (root / "submit").iterdir()) if (root / "submit").exists() else []
    assert left == [], f"sandboxes left behind: {left}"
