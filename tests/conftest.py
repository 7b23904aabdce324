from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "sitecaps"))

from opsagent.testing import port_open  # noqa: E402
from support import Caller, HostProcess, service_env  # noqa: E402


@pytest.fixture(scope="session")
def broker() -> dict[str, str]:
    env = service_env("activemq")
    if not port_open(env["ACTIVEMQ_HOST"], int(env["ACTIVEMQ_PORT"])):
        pytest.fail("ActiveMQ is not accepting connections: run `scripts/services.sh start "
                    "activemq` (`make test` does)")
    return env


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
