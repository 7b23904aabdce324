"""Fixtures: the operator's token (checked untouched after each test), the fake PanDA
server and the fake monitor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from opsagent.testing import FakeMonitor, FakePanda
from panda_ops_support import MONITOR_TOKEN, token_file_bytes


@attrs.define
class OperatorToken:
    path: Path
    id_token: str = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False)
    mtime_ns: int

    def assert_untouched(self) -> None:
        assert self.path.read_bytes() == self.raw, "the operator's token was rewritten"
        assert self.path.stat().st_mtime_ns == self.mtime_ns, "the token's mtime changed"
        assert [p.name for p in self.path.parent.iterdir()] == [".token"]


@pytest.fixture
def operator_token(tmp_path: Path) -> Iterator[OperatorToken]:
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
        fake.add_task(41000, "t.41000")
        fake.add_task(41001, "t.41001")
        fake.add_task(41002, "t.41002")
        yield fake


@pytest.fixture
def monitor() -> Iterator[FakeMonitor]:
    with FakeMonitor(tokens=(MONITOR_TOKEN,), trust_localhost=False) as fake:
        yield fake
