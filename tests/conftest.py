from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "sitecaps"))

from support import Caller, HostProcess  # noqa: E402

# The ``broker`` fixture (one run per broker, ``--broker``) is in the repository's root
# conftest.py, shared with the plugins' tests.


@pytest.fixture
def host_factory(tmp_path: Path, broker: dict[str, str]):
    made: list[HostProcess] = []

    def make(**kwargs) -> HostProcess:
        h = HostProcess(tmp_path / f"h{len(made)}", broker, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def caller_for(broker: dict[str, str]):
    made: list[Caller] = []

    def make(host: HostProcess, **kwargs) -> Caller:
        c = Caller(broker, host.queue, host.topic, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
