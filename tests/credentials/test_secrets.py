"""Secret values never leave the host: sentinel secrets are planted in every kind of
credential and setting, every failure path that can carry them is forced, and every
sink is searched for them."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from notify_socket import NotifySocket
from opsagent.testing.http import FakeServer, Response
from support import OPSAGENT, ROOT

pytestmark = pytest.mark.broker

SITEOPS = ROOT / "tests" / "siteops"


def sentinel(kind: str) -> str:
    # '/', '+' and '=' make the percent-encoded form differ from the raw one.
    return f"SENTINEL-{kind}/{uuid.uuid4().hex[:12]}+x="


def jwt(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_sentinel_secrets_reach_no_sink(host_factory, caller_for, tmp_path):
    secrets = {k: sentinel(k) for k in ("file", "env", "broker", "monitor", "unsafe")}
    secrets["jwt"] = jwt({"exp": 1700000000, "sub": sentinel("jwt-claim")})  # expired 2023
    creds = tmp_path / "creds"
    creds.mkdir()
    sources = {
        "leak_token": {"file": str(write(creds / "leak_token", secrets["file"] + "\n"))},
        "leak_env": {"env": "LEAK_ENV_SECRET"},
        "leak_jwt": {"file": str(write(creds / "leak_jwt", secrets["jwt"]))},
        "leak_unsafe": {"file": str(write(creds / "leak_unsafe", secrets["unsafe"], 0o666))},
    }
    notify = NotifySocket(tmp_path / "notify")
    with FakeServer() as svc, FakeServer() as mon:
        # A service and a monitor that answer 401 and echo every header they were sent.
        echo = Response.json
        svc.route("GET", "/echo", lambda r: echo({"headers": dict(r.headers)}, 401))
        for path in ("/api/systemagents/heartbeat/", "/api/logs/"):
            mon.route("POST", path, lambda r: echo({"headers": dict(r.headers)}, 401))
        env = {
            "LEAK_ENV_SECRET": secrets["env"],
            "ACTIVEMQ_USER": "opsagent",
            "ACTIVEMQ_PASSWORD": secrets["broker"],
            "SWF_API_TOKEN": secrets["monitor"],
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": "1000000",
            "OPSAGENT_TEST_LEAKY_PLUGIN_VAR": "LEAK_ENV_SECRET",
        }
        extra = {
            "host": {"log_level": "DEBUG"},
            "monitor": {"enabled": True, "url": mon.url, "heartbeat_seconds": 0.5,
                        "timeout_seconds": 2},
            "metrics": {"enabled": True, "port": 0},
            **{f"credentials.{name}": src for name, src in sources.items()},
        }
        host = host_factory(paths=(SITEOPS,), env=env, extra=extra).start()
        caller = caller_for(host)
        answers = {}
        for msg_type in ("ops_leak", "ops_leak_process"):
            for how in ("http401", "url", "traceback", "log"):
                rid = caller.send(msg_type, {"how": how, "url": f"{svc.url}/echo"})
                answers[(msg_type, how)] = caller.wait_event(rid)
        answers[("ops_leak", "env")] = caller.wait_event(caller.send("ops_leak", {"how": "env"}))
        answers[("ops_leak_process", "die")] = caller.wait_event(
            caller.send("ops_leak_process", {"how": "die"}))
        for msg_type in ("ops_leak_expired", "ops_leak_unsafe"):
            answers[(msg_type, "-")] = caller.wait_event(caller.send(msg_type, {"how": "log"}))
        port = int(re.search(r"metrics on http://127.0.0.1:(\d+)/", host.text()).group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
            metrics = r.read().decode()
        cli_env = {**host.env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
        plugins = subprocess.run([*OPSAGENT, "--config", str(host.config), "plugins", "--json"],
                                 env=cli_env, capture_output=True, text=True, timeout=60)
        selftest = subprocess.run([*OPSAGENT, "--config", str(host.config), "selftest",
                                   "--json"], env=cli_env, capture_output=True, text=True,
                                  timeout=120)
        time.sleep(1.0)  # a heartbeat or two
        host.signal(signal.SIGTERM)
        assert host.wait(30) == 0
        monitor_bodies = [r.body.decode() for r in mon.requests]
        monitor_headers = [r.headers.get("Authorization") for r in mon.requests]
        service_headers = [r.headers.get("Authorization") for r in svc.requests]
    notify.close()

    # The failure paths really ran, with the real secrets.
    assert f"Bearer {secrets['file']}" in service_headers
    assert f"Token {secrets['monitor']}" in monitor_headers
    for (msg_type, how), event in answers.items():
        if how in ("http401", "url", "traceback", "die"):
            assert event["outcome"] == "error", (msg_type, how, event)
            assert "[redacted]" in event["reason"], (msg_type, how, event)
        elif how in ("log", "env"):
            assert event["outcome"] == "ok", (msg_type, how, event)
    assert answers[("ops_leak", "log")]["echoed"] == "[redacted]"
    assert answers[("ops_leak", "env")]["value"] == "[redacted]"
    expired = answers[("ops_leak_expired", "-")]
    assert expired["code"] == "unavailable"
    assert "leak_jwt expired 2023-11-14 22:13 UTC" in expired["reason"]
    unsafe = answers[("ops_leak_unsafe", "-")]
    assert unsafe["code"] == "unavailable" and "has mode 0666" in unsafe["reason"]
    assert plugins.returncode == 0 and "testops_leaky" in plugins.stdout
    assert "[redacted]" in plugins.stdout, "the leaky plugin's error was scrubbed"
    assert selftest.returncode == 1

    sinks = {
        "host log": host.text(),
        "events and replies": json.dumps(caller.events) + json.dumps(caller.replies),
        "plugins --json": plugins.stdout + plugins.stderr,
        "selftest --json": selftest.stdout + selftest.stderr,
        "monitor bodies": "\n".join(monitor_bodies),
        "metrics": metrics,
        "systemd notifications": json.dumps([f for _, f in notify.messages]),
    }
    for directory in (host.tmp / "state", host.tmp / "cache"):
        for f in sorted(directory.rglob("*")):
            if f.is_file():
                sinks[str(f.relative_to(host.tmp))] = f.read_bytes().decode("latin-1")
    assert "ended error" in sinks["host log"] and "Traceback" in sinks["host log"]
    assert any(name.endswith("journal.sqlite3") for name in sinks)
    leaks = [
        (name, kind)
        for name, text in sinks.items()
        for kind, secret in secrets.items()
        for form in {secret, quote(secret, safe="")}
        if form in text
    ]
    assert leaks == [], leaks
    assert os.environ.get("LEAK_ENV_SECRET") is None


SITEREDACT = ROOT / "tests" / "siteredact"


def test_secret_config_fields_and_secrets_nobody_declared_reach_no_sink(
    host_factory, caller_for, tmp_path
):
    """A ``[capability.*]`` password declared with ``secret()`` is scrubbed like a
    credential; secrets nobody declared are scrubbed by their shape (URL userinfo, an
    Authorization header, a Bearer token, authz/sig query parameters)."""
    password = f"S3cret-{uuid.uuid4().hex[:12]}"
    undeclared = {
        kind: f"UNDECL{kind}{uuid.uuid4().hex[:16]}"
        for kind in ("userinfo", "basic", "bearer", "authz", "sig", "header")
    }
    section = {"username": "ruciouser", "password": password,
               "undeclared": list(undeclared.values())}
    with FakeServer() as mon:
        for path in ("/api/systemagents/heartbeat/", "/api/logs/"):
            mon.route("POST", path, Response.json({}, 201))
        extra = {
            "host": {"log_level": "DEBUG"},
            "monitor": {"enabled": True, "url": mon.url, "heartbeat_seconds": 60,
                        "timeout_seconds": 2},
            "capability.test_login_thread": section,
            "capability.test_login_process": section,
        }
        host = host_factory(paths=(SITEREDACT,), extra=extra).start()
        caller = caller_for(host)
        answers = {
            (msg_type, how): caller.wait_event(caller.send(msg_type, {"how": how}))
            for msg_type in ("test_login_thread", "test_login_process")
            for how in ("declared", "undeclared", "raise")
        }
        # The monitor posts from its own thread: wait for every job's record.
        deadline = time.monotonic() + 20
        while len(mon.requests_to("POST", "/api/logs/")) < len(answers):
            assert time.monotonic() < deadline, "the monitor did not get every record"
            time.sleep(0.05)
        host.signal(signal.SIGTERM)
        assert host.wait(30) == 0
        monitor_bodies = [r.body.decode() for r in mon.requests_to("POST", "/api/logs/")]

    for key, event in answers.items():
        assert event["outcome"] == "error", (key, event)
        assert "[redacted]" in event["reason"], (key, event)
    declared = answers[("test_login_thread", "declared")]["reason"]
    assert declared == "login failed for ruciouser/[redacted]"
    said = answers[("test_login_process", "undeclared")]["reason"]
    for shown in ("https://ruciouser:[redacted]@rucio.example/auth",
                  "'Authorization': 'Basic [redacted]'", "Bearer [redacted]",
                  "?authz=[redacted]&sig=[redacted]", "X-Rucio-Auth-Token: [redacted]"):
        assert shown in said, said

    log = host.text()
    assert "login failed for ruciouser/[redacted]" in log
    assert "stderr: login failed for ruciouser/[redacted]" in log  # a process job's output
    assert "Traceback" in log
    sinks = {
        "host log": log,
        "events and replies": json.dumps(caller.events) + json.dumps(caller.replies),
        "monitor action log": "\n".join(monitor_bodies),
    }
    for directory in (host.tmp / "state", host.tmp / "cache"):
        for f in sorted(directory.rglob("*")):
            if f.is_file():
                sinks[str(f.relative_to(host.tmp))] = f.read_bytes().decode("latin-1")
    assert any(name.endswith("journal.sqlite3") for name in sinks)
    leaks = [
        (name, kind)
        for name, text in sinks.items()
        for kind, secret in {"password": password, **undeclared}.items()
        if secret in text
    ]
    assert leaks == [], leaks


def test_opsagent_do_and_selftest_know_the_declared_secret_config_fields(host_factory):
    """The cron path and the operator's check scrub a secret config field as the host
    does (both printed it in clear: they learnt credentials, not config fields)."""
    password = f"S3cret-{uuid.uuid4().hex[:12]}"
    section = {"username": "ruciouser", "password": password, "undeclared": []}
    host = host_factory(paths=(SITEREDACT,),
                        extra={"capability.test_login_thread": section})
    cli = [*OPSAGENT, "--config", str(host.config)]
    done = subprocess.run([*cli, "do", "test_login_thread", "--json", '{"how": "declared"}'],
                          env=host.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "login failed for ruciouser/[redacted]" in done.stdout + done.stderr
    assert password not in done.stdout + done.stderr
    checked = subprocess.run([*cli, "selftest", "--capability", "test_login_thread"],
                             env=host.env, capture_output=True, text=True, timeout=60)
    assert password not in checked.stdout + checked.stderr
