"""Fixtures of the fetch_payload_log tests: xrootd and Rucio started by ``scripts/services.sh``.

A test that needs a service fails, naming the command that starts it, when the service
is not there; it never skips.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opsagent import Credential, Job
from opsagent.testing import self_signed
from opsagent_fetch_payload_log import demo
from opsagent_fetch_payload_log.config import FetchConfig

sys.path.insert(0, str(Path(__file__).parent))

from fpl_support import (  # noqa: E402
    SERVICES,
    Rucio,
    SilentServer,
    XRootD,
    service_env,
    setting,
)
from opsagent.testing import port_open  # noqa: E402


def _not_running(service: str, detail: str) -> None:
    pytest.fail(
        f"{service} is not running ({detail}); start it with: scripts/services.sh start {service}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def xrootd() -> Iterator[XRootD]:
    env = service_env("xrootd")
    url, data = setting(env, "XROOTD_TEST_URL"), setting(env, "XROOTD_DATA")
    if not url or not data:
        _not_running("xrootd", f"no XROOTD_TEST_URL/XROOTD_DATA in {SERVICES}/xrootd.env")
    hostport = url.split("://", 1)[1]
    host, _, port = hostport.rpartition(":")
    if not port_open(host, int(port)):
        _not_running("xrootd", f"nothing listens on {hostport}")
    server = XRootD(url, Path(data), f"fpl-tests/{uuid.uuid4().hex[:12]}")
    yield server
    shutil.rmtree(server.data / server.area, ignore_errors=True)


@pytest.fixture(scope="session")
def rucio(xrootd: XRootD, tmp_path_factory: pytest.TempPathFactory) -> Rucio:
    env = service_env("rucio")
    url = setting(env, "RUCIO_TEST_URL")
    if not url:
        _not_running("rucio", f"no RUCIO_TEST_URL in {SERVICES}/rucio.env")
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as r:  # noqa: S310 - loopback
            r.read()
    except OSError as exc:
        _not_running("rucio", f"{url}/ping: {exc}")
    account = setting(env, "RUCIO_TEST_ACCOUNT") or "root"
    username = setting(env, "RUCIO_TEST_USERNAME") or ""
    password = setting(env, "RUCIO_TEST_PASSWORD") or ""
    client = demo.admin_client(
        url, account, username, password, tmp_path_factory.mktemp("rucio-admin-token")
    )
    r = Rucio(url, account, username, password, client, xrootd)
    host, _, port = xrootd.url.split("://", 1)[1].rpartition(":")
    r.rse = r.add_rse("root", host, int(port))
    demo.ensure_scope(client, account, r.scope)
    return r


@pytest.fixture(scope="session")
def proxy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEM certificate and key standing in for an x509 proxy, valid for two days."""
    return self_signed(tmp_path_factory.mktemp("proxy"), "opsagent test proxy").combined()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    root.mkdir()
    return root


@pytest.fixture
def make_job(cache: Path, proxy_file: Path) -> Callable[..., Job]:
    """``make_job(config, time_limit=..., proxy=...)``: a Job as the host would build it."""

    def make(
        config: FetchConfig | None, *, time_limit: float = 30.0, proxy: Path | None = None
    ) -> Job:
        cred = Credential("x509_proxy", path=proxy or proxy_file)
        env = {"PATH": os.environ["PATH"], "OPSAGENT_CREDENTIAL_X509_PROXY": str(cred.path)}
        return Job(
            id=f"test-{uuid.uuid4().hex[:8]}",
            msg_type="fetch_payload_log",
            cache_dir=cache,
            time_limit=time_limit,
            config=config,
            credentials={"x509_proxy": cred},
            env=env,
        )

    return make


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()
