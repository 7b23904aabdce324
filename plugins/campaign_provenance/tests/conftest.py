"""Fixtures: the real local Rucio server with a seeded campaign, the fake catalogue serving
its requested paths, jobs as the host makes them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
# The seeder, the fake catalogue and the Rucio relay are rucio_snapshot's: same Rucio,
# same catalogue.
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "rucio_snapshot" / "tests")]

from fake_catalogue import FakeCatalogue  # noqa: E402
from loopback_proxy import RucioRelay  # noqa: E402
from opsagent import Credential, Job  # noqa: E402
from opsagent.testing import FakeServer, config_from_table  # noqa: E402
from opsagent_campaign_provenance import CAPABILITY  # noqa: E402
from opsagent_campaign_provenance.config import ProvenanceConfig  # noqa: E402
from provenance_seed import VERSION, Plan, seed  # noqa: E402
from rucio_seed import admin_client, services_dir  # noqa: E402

START_RUCIO = "scripts/services.sh install rucio && scripts/services.sh start rucio"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rucio: needs the local Rucio server (" + START_RUCIO + ")")


@pytest.fixture(scope="session")
def rucio_server() -> dict[str, str]:
    """The Rucio server started by scripts/services.sh; a test that needs it fails without it."""
    import urllib.request

    env_file = services_dir() / "rucio.env"
    if not env_file.exists():
        pytest.fail(f"the local Rucio server was never started ({env_file} missing): {START_RUCIO}")
    env = dict(line.split("=", 1) for line in env_file.read_text().split() if "=" in line)
    try:
        urllib.request.urlopen(env["RUCIO_TEST_URL"] + "/ping", timeout=5).read()
    except OSError as exc:
        pytest.fail(f"the local Rucio server does not answer /ping ({exc}): {START_RUCIO}")
    return env


@pytest.fixture(scope="session")
def plan(rucio_server: dict[str, str]) -> Plan:
    """The seeded campaign: 1,000+ requested paths, seeded once per session (and kept)."""
    client = admin_client(
        rucio_server["RUCIO_TEST_URL"],
        rucio_server["RUCIO_TEST_ACCOUNT"],
        rucio_server["RUCIO_TEST_USERNAME"],
        rucio_server["RUCIO_TEST_PASSWORD"],
    )
    return seed(client, VERSION)


@pytest.fixture
def relay(rucio_server: dict[str, str]) -> Iterator[RucioRelay]:
    """A fault-injecting relay in front of the real server."""
    with RucioRelay(rucio_server["RUCIO_TEST_URL"]) as r:
        yield r


@pytest.fixture
def catalogue(plan: Plan) -> Iterator[FakeCatalogue]:
    with FakeServer() as server:
        yield FakeCatalogue(
            server,
            [
                {"version": VERSION, "lifecycle": "current"},
                {"version": "20.01.0", "lifecycle": "closed"},
            ],
            [],
            requested={VERSION: plan.rows()},
        )


@pytest.fixture
def make_job(tmp_path: Path, rucio_server: dict[str, str]):
    """Jobs as the host makes them: config structured from a TOML-like table."""

    def make(*, password: str | None = None, **table: Any) -> Job:
        settings = {
            "rucio_url": rucio_server["RUCIO_TEST_URL"],
            "rucio_account": rucio_server["RUCIO_TEST_ACCOUNT"],
            "rucio_username": rucio_server["RUCIO_TEST_USERNAME"],
            **table,
        }
        config: ProvenanceConfig = config_from_table(CAPABILITY, settings)
        secret = rucio_server["RUCIO_TEST_PASSWORD"] if password is None else password
        return Job(
            id="test-job",
            msg_type=CAPABILITY.msg_type,
            cache_dir=tmp_path / "cache",
            time_limit=CAPABILITY.time_limit,
            config=config,
            credentials={"rucio_userpass": Credential("rucio_userpass", value=secret)},
        )

    return make
