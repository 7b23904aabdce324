"""Through the host: ActiveMQ, the host process, a job process, Rucio, xrootd, the cache.

Needs ``scripts/services.sh start activemq xrootd rucio``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import fpl_tarballs as T
import opsagent_fetch_payload_log as capability
import pytest
from fpl_support import REPO, SERVICES, Rucio, SilentServer, processes_mentioning, service_env, tree

OPSAGENT = [sys.executable, "-m", "opsagent.cli.main"]


def toml(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def fetch_section(rucio: Rucio, **extra: Any) -> dict[str, Any]:
    return {
        "rucio_url": rucio.url,
        "auth_type": "userpass",
        "account": rucio.account,
        "username": rucio.username,
        "password": rucio.password,
        "fsync": False,
        **extra,
    }


@attrs.define
class RunningHost:
    config: Path
    cache: Path
    topic: str
    instance: str
    events: queue.Queue  # type: ignore[type-arg]

    def send(self, *fields: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
        """``opsagent send fetch_payload_log ... --wait``, as the README shows it."""
        done = subprocess.run(
            [
                *OPSAGENT,
                "--config",
                str(self.config),
                "send",
                "fetch_payload_log",
                *fields,
                "--wait",
                "--timeout",
                str(timeout),
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            cwd=REPO,
        )
        assert done.stdout.strip(), done.stderr
        return done.returncode, json.loads(done.stdout)

    def event(self, timeout: float = 10) -> dict[str, Any]:
        return self.events.get(timeout=timeout)


@pytest.fixture
def broker() -> tuple[str, int]:
    env = service_env("activemq")
    host = os.environ.get("ACTIVEMQ_HOST") or env.get("ACTIVEMQ_HOST")
    port = os.environ.get("ACTIVEMQ_PORT") or env.get("ACTIVEMQ_PORT")
    if not host or not port:
        pytest.fail(
            f"activemq is not running (no {SERVICES}/activemq.env); start it with: "
            "scripts/services.sh start activemq",
            pytrace=False,
        )
    return host, int(port)


@pytest.fixture
def running_host(
    broker: tuple[str, int], rucio: Rucio, proxy_file: Path, tmp_path: Path
) -> Iterator[RunningHost]:
    import stomp

    env = service_env("activemq")
    tag = uuid.uuid4().hex[:10]
    topic = f"/topic/fpltest.events.{tag}"
    instance = f"fpltest-{tag}"
    cfg = tmp_path / "opsagent.toml"
    cache = tmp_path / "swf-tmp"
    cfg.write_text(
        toml(
            {
                "host": {
                    "instance": instance,
                    "cache_dir": str(cache),
                    "state_dir": str(tmp_path / "state"),
                    "drain_seconds": 2,
                    "kill_grace_seconds": 1,
                },
                "broker": {
                    "hosts": [f"{broker[0]}:{broker[1]}"],
                    "user": env["ACTIVEMQ_USER"],
                    "password": env["ACTIVEMQ_PASSWORD"],
                    "queue": f"/queue/fpltest.{tag}",
                    "topic": topic,
                    "heartbeat_ms": 0,
                },
                "capabilities": {"allow": ["fetch_payload_log"], "require": ["fetch_payload_log"]},
                "credentials.x509_proxy": {"file": str(proxy_file)},
                "capability.fetch_payload_log": fetch_section(rucio),
            }
        )
    )
    events: queue.Queue = queue.Queue()  # type: ignore[type-arg]

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            events.put(json.loads(frame.body))

    watcher = stomp.Connection12([broker], heartbeats=(0, 0))
    watcher.set_listener("events", Listener())
    watcher.connect(env["ACTIVEMQ_WEB_USER"], env["ACTIVEMQ_WEB_PASSWORD"], wait=True)
    watcher.subscribe(topic, id="events", ack="auto")
    log = open(tmp_path / "host.log", "w")  # noqa: SIM115 - closed below
    host = subprocess.Popen(
        [*OPSAGENT, "--config", str(cfg), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        yield RunningHost(cfg, cache, topic, instance, events)
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
        log.close()
        watcher.disconnect()


def test_a_request_on_activemq_lands_the_log_in_the_cache_and_announces_it(
    running_host: RunningHost, rucio: Rucio
) -> None:
    lfn = rucio.register(T.honest())
    status, answer = running_host.send(
        f"scope={rucio.scope}",
        f"lfn={lfn}",
        "jeditaskid=1001",
        "pandaid:=4242",
        "requested_by=tester",
    )
    job_dir = running_host.cache / "panda-logs" / "1001" / "4242"
    assert status == 0, answer
    event = running_host.event()
    for body in (answer, event):
        assert {
            k: body[k]
            for k in (
                "msg_type",
                "pandaid",
                "jeditaskid",
                "ok",
                "outcome",
                "sender",
                "namespace",
                "path",
                "members",
                "cached",
            )
        } == {
            "msg_type": "payload_log_ready",
            "pandaid": "4242",
            "jeditaskid": "1001",
            "ok": True,
            "outcome": "ok",
            "sender": running_host.instance,
            "namespace": "prodops",
            "path": str(job_dir),
            "members": sorted(T.KEPT),
            "cached": False,
        }
    expected = {name: ("file", 0o644, T.content(name)) for name in T.KEPT}
    expected[".done"] = (
        "file",
        0o644,
        b"pandatracerlog.txt,payload.stderr,payload.stdout,pilotlog.txt\n",
    )
    assert tree(job_dir) == expected

    status, again = running_host.send(
        f"scope={rucio.scope}", f"lfn={lfn}", "jeditaskid:=1001", "pandaid=4242"
    )
    assert (status, again["msg_type"], again["cached"]) == (0, "payload_log_ready", True)


def test_a_failure_is_announced_with_the_error_and_the_attempt_count(
    running_host: RunningHost, rucio: Rucio
) -> None:
    lfn = "panda.never.registered.log.tgz"
    for attempt in (1, 2):
        status, answer = running_host.send(
            f"scope={rucio.scope}", f"lfn={lfn}", "jeditaskid=1001", "pandaid=4242"
        )
        assert status == 1
        reason = f"rucio: unknown DID {rucio.scope}:{lfn}"
        event = running_host.event()
        for body in (answer, event):
            assert {
                k: body[k] for k in ("msg_type", "pandaid", "jeditaskid", "ok", "error", "attempts")
            } == {
                "msg_type": "payload_log_failed",
                "pandaid": "4242",
                "jeditaskid": "1001",
                "ok": False,
                "error": reason,
                "attempts": attempt,
            }
    body = json.loads((running_host.cache / "panda-logs/1001/4242/.error").read_text())
    assert (body["attempts"], body["last_error"]) == (2, reason)


def test_a_bad_id_is_refused_before_anything_is_touched(
    running_host: RunningHost, rucio: Rucio
) -> None:
    status, answer = running_host.send(
        f"scope={rucio.scope}", "lfn=x.log.tgz", "jeditaskid=1001", "pandaid=../../x"
    )
    assert status == 4
    assert answer["msg_type"] == "request_rejected"
    assert "$.pandaid: expected digits, got '../../x'" in answer["errors"]
    assert not (running_host.cache / "panda-logs").exists()


def test_the_host_kills_a_hung_fetch_at_its_time_limit_and_error_tells_why(
    opsagent_harness, rucio: Rucio, proxy_file: Path, silent_server: SilentServer
) -> None:  # type: ignore[no-untyped-def]
    rse = rucio.add_rse("root", "127.0.0.1", silent_server.port)
    lfn = f"panda.hung.{time.monotonic_ns()}.log.tgz"
    pfn = f"root://127.0.0.1:{silent_server.port}//hung/{lfn}"
    rucio.register_elsewhere(lfn, pfn, rse=rse)
    h = opsagent_harness(
        modules=[capability],
        config={
            "credentials.x509_proxy": {"file": str(proxy_file)},
            "capability.fetch_payload_log": fetch_section(rucio, time_limit=3, xrdcp_timeout=60),
        },
    )
    started = time.monotonic()
    answer = h.send(
        "fetch_payload_log",
        {"scope": rucio.scope, "lfn": lfn, "jeditaskid": "1001", "pandaid": "4242"},
        timeout=30,
    )
    assert time.monotonic() - started < 10
    assert (answer["msg_type"], answer["outcome"]) == ("payload_log_failed", "timeout")
    assert (answer["pandaid"], answer["jeditaskid"]) == ("4242", "1001")
    body = json.loads((Path(h.config.host.cache_dir) / "panda-logs/1001/4242/.error").read_text())
    assert body["attempts"] == 1
    assert body["last_error"] == (
        f"timeout: xrdcp from {pfn} did not finish within the time limit of 3 s"
    )
    assert processes_mentioning(f"127.0.0.1:{silent_server.port}") == []
    staging = Path(h.config.host.cache_dir) / "panda-logs/.staging"
    assert os.listdir(staging) == []


def web_view(job_dir: Path) -> str:
    """What the job page does on a visit, by the web tier's rule: ``.done`` serves the log;
    ``.error`` with ``attempts >= 3`` refuses ("failed N times"); anything else requests
    a fetch (again)."""
    if (job_dir / ".done").is_file():
        return "serve"
    try:
        attempts = json.loads((job_dir / ".error").read_text())["attempts"]
    except FileNotFoundError:
        return "fetch"
    return f"failed {attempts} times" if attempts >= 3 else "fetch"


def test_the_web_view_counts_only_failed_attempts_even_while_the_third_runs(
    opsagent_harness, rucio: Rucio, proxy_file: Path, silent_server: SilentServer
) -> None:  # type: ignore[no-untyped-def]
    rse = rucio.add_rse("root", "127.0.0.1", silent_server.port)
    hung = f"panda.hung.{time.monotonic_ns()}.log.tgz"
    rucio.register_elsewhere(hung, f"root://127.0.0.1:{silent_server.port}//hung/{hung}", rse=rse)
    h = opsagent_harness(
        modules=[capability],
        config={
            "credentials.x509_proxy": {"file": str(proxy_file)},
            "capability.fetch_payload_log": fetch_section(rucio, time_limit=4, xrdcp_timeout=60),
        },
    )
    job_dir = Path(h.config.host.cache_dir) / "panda-logs/1001/4242"
    ids = {"jeditaskid": "1001", "pandaid": "4242"}
    for n in (1, 2):
        answer = h.send(
            "fetch_payload_log", {"scope": rucio.scope, "lfn": f"missing.{n}.log.tgz", **ids}
        )
        assert (answer.get("outcome"), answer.get("attempts")) == ("error", n), answer
        assert web_view(job_dir) == "fetch"
    third = h.publish("fetch_payload_log", {"scope": rucio.scope, "lfn": hung, **ids})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not silent_server.accepted:
        time.sleep(0.02)
    assert silent_server.accepted, "the third attempt never reached xrdcp"
    # The third attempt is running: two failures so far, and the page says so.
    running = json.loads((job_dir / ".running").read_text())
    assert running["attempt"] == 3 and running["step"].startswith("xrdcp from ")
    assert json.loads((job_dir / ".error").read_text())["attempts"] == 2
    assert web_view(job_dir) == "fetch"
    answer = h.wait_for(third, 30)
    assert answer["outcome"] == "timeout"
    assert json.loads((job_dir / ".error").read_text())["attempts"] == 3
    assert web_view(job_dir) == "failed 3 times"
    assert not (job_dir / ".running").exists()
