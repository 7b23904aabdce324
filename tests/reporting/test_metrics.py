"""The Prometheus endpoint: jobs by capability and outcome, durations, in flight, queue
depth, broker connection, credential expiry -- on loopback only."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import opscaps
import pytest
from opsagent.host import config
from opsagent.reporting.metrics import Metrics
from prometheus_client.parser import text_string_to_metric_families

EXP = 1893456000  # 2030-01-01 00:00 UTC


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def jwt(exp: int) -> str:
    part = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{part}.c2ln"


def test_metrics_follow_jobs_and_state(opsagent_harness, tmp_path):
    token = tmp_path / "ops_token"
    token.write_text(jwt(EXP))
    token.chmod(0o600)
    h = opsagent_harness(modules=[opscaps], config={
        "metrics": {"enabled": True, "port": 0},
        "credentials.ops_token": {"file": str(token)}})
    port = h.host.observer(Metrics).port
    assert port and h.host.observer(Metrics)._server.server_address[0] == "127.0.0.1"
    h.send("ops_work", {})
    h.send("ops_work", {"seconds": 0.2})
    h.send("ops_work", {"fail": True})
    # Jobs are counted just after their event is published.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = scrape(port)
        if m.get(("opsagent_job_duration_seconds_count", (("capability", "ops_work"),))) == 3:
            break
        time.sleep(0.02)
    assert m[("opsagent_jobs_total", (("capability", "ops_work"), ("outcome", "ok")))] == 2
    assert m[("opsagent_jobs_total", (("capability", "ops_work"), ("outcome", "error")))] == 1
    assert m[("opsagent_job_duration_seconds_count", (("capability", "ops_work"),))] == 3
    assert m[("opsagent_job_duration_seconds_bucket",
              (("capability", "ops_work"), ("le", "0.1")))] == 2
    assert m[("opsagent_broker_connected", ())] == 1
    assert m[("opsagent_credential_expiry_timestamp_seconds", (("credential", "ops_token"),))] \
        == EXP
    assert m[("opsagent_capability_available", (("capability", "ops_needs_token"),))] == 1
    assert m[("opsagent_messages_total", (("result", "accepted"),))] == 3

    # One running, one waiting (concurrency 1).
    running = h.publish("ops_work", {"seconds": 1.0})
    waiting = h.publish("ops_work", {"seconds": 0.0})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = scrape(port)
        if (m[("opsagent_jobs_in_flight", (("capability", "ops_work"),))] == 2
                and m[("opsagent_queue_depth", (("capability", "ops_work"),))] == 1):
            break
        time.sleep(0.05)
    assert m[("opsagent_jobs_in_flight", (("capability", "ops_work"),))] == 2
    assert m[("opsagent_queue_depth", (("capability", "ops_work"),))] == 1
    h.wait_for(running)
    h.wait_for(waiting)
    h.join()  # the job leaves the ledger just after its event is published
    assert scrape(port)[("opsagent_jobs_in_flight", (("capability", "ops_work"),))] == 0
    assert scrape(port)[("opsagent_queue_depth", (("capability", "ops_work"),))] == 0


def test_a_missing_credential_shows_as_an_unavailable_capability(opsagent_harness):
    h = opsagent_harness(modules=[opscaps], config={"metrics": {"enabled": True, "port": 0}})
    m = scrape(h.host.observer(Metrics).port)
    assert m[("opsagent_capability_available", (("capability", "ops_needs_token"),))] == 0
    assert m[("opsagent_capability_available", (("capability", "ops_work"),))] == 1


@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.10", "::", "metrics.example"])
def test_the_endpoint_is_refused_anywhere_but_on_loopback(tmp_path, address):
    path = tmp_path / "opsagent.toml"
    path.write_text(f'[metrics]\nenabled = true\naddress = "{address}"\n')
    with pytest.raises(config.ConfigError, match="is not a loopback address"):
        config.load(path)
    path.write_text('[metrics]\nenabled = true\naddress = "::1"\n')
    assert config.load(path).metrics.address == "::1"


def test_a_port_in_use_stops_the_start_as_a_configuration_error(tmp_path):
    import socket
    from importlib.metadata import entry_points

    from opsagent.host import plugins
    from opsagent.host.daemon import EXIT_CONFIG, Host, StartupError
    from opsagent.transport.memory import MemoryBroker, MemoryTransport

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "opsagent.toml"
        path.write_text(f'[host]\ncache_dir = "{tmp_path}/c"\nstate_dir = "{tmp_path}/s"\n'
                        f"[metrics]\nenabled = true\nport = {port}\n")
        cfg = config.load(path)
        builtin = [ep for ep in entry_points(group=plugins.GROUP)
                   if ep.value == "opsagent.builtin"]
        host = Host(cfg, transport=MemoryTransport(MemoryBroker(), cfg.broker.queue),
                    registry=plugins.load(entry_points_=builtin))
        with pytest.raises(StartupError) as info:
            host.run(install_signals=False)
    assert info.value.status == EXIT_CONFIG
    assert f"metrics: cannot listen on 127.0.0.1:{port}" in str(info.value)
