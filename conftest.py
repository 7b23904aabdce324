"""The broker every broker test runs on: ``--broker=classic|artemis|both`` (default both).

Here, at the root, so that the host's tests and the plugins' share it: a test that uses
the ``broker`` fixture (directly or through ``host_factory``, ``caller_for`` ...) runs once
per broker chosen, with the broker's name in its id (``test_x[artemis]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tests"))

from opsagent.testing import port_open  # noqa: E402
from support import BROKERS, SERVICE_OF, broker_env  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--broker", choices=(*BROKERS, "both"), default="both",
                     help="the broker(s) the broker tests run on (default: both)")


def chosen_brokers(config: pytest.Config) -> tuple[str, ...]:
    opt = config.getoption("broker")
    return BROKERS if opt == "both" else (opt,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker" in metafunc.fixturenames:
        metafunc.parametrize("broker", chosen_brokers(metafunc.config), indirect=True,
                             scope="session")


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> dict[str, str]:
    """The running test broker's connection settings (see ``support.broker_env``)."""
    kind = request.param
    service = SERVICE_OF[kind]
    try:
        env = broker_env(kind)
    except RuntimeError as exc:
        pytest.fail(f"{exc}; or choose another with --broker")
    if not port_open(env["ACTIVEMQ_HOST"], int(env["ACTIVEMQ_PORT"])):
        pytest.fail(f"{service} is not accepting connections: run `scripts/services.sh start "
                    f"{service}` (`make test` does), or choose another with --broker")
    return env
