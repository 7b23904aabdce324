"""``opsagent selftest``: each finding, a table for people, JSON for scripts, exit 1 on failure."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import OPSAGENT, ROOT, SITEBROKEN, SITECAPS, toml

SITEOPS = ROOT / "tests" / "siteops"
SECRET = "selftest-sentinel-77c1e0"


def jwt(claims: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{part}.c2ln"


def selftest(config: Path, *args: str, paths: tuple[Path, ...] = (SITEOPS,)):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    return subprocess.run([*OPSAGENT, "--config", str(config), "selftest", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def by_check(doc: dict) -> dict[tuple[str, str], tuple[str, str]]:
    return {(c["subject"], c["check"]): (c["status"], c["detail"]) for c in doc["checks"]}


@pytest.fixture
def config(tmp_path) -> Path:
    token = tmp_path / "ops_token"
    token.write_text(jwt({"exp": 1893456000, "sub": SECRET}))  # 2030-01-01 00:00 UTC
    token.chmod(0o600)
    unsafe = tmp_path / "ops_unsafe"
    unsafe.write_text(SECRET)
    unsafe.chmod(0o666)
    path = tmp_path / "opsagent.toml"
    path.write_text(toml({
        "host": {"cache_dir": str(tmp_path / "cache"), "state_dir": str(tmp_path / "state")},
        "credentials.ops_token": {"file": str(token)},
        "credentials.ops_unsafe": {"file": str(unsafe)},
        "capability.ops_good": {"service_url": "http://127.0.0.1:1/svc"},
    }))
    return path


def test_every_finding_with_json_for_scripts(config):
    done = selftest(config, "--json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is False and doc["summary"]["fail"] >= 4
    f = by_check(doc)
    assert f[("host", "configuration")] == ("ok", str(config))
    assert f[("host", "cache directory")][0] == "ok"
    assert "can create it in" in f[("host", "cache directory")][1]
    status, detail = f[("plugin testops", "load")]
    assert status == "ok" and detail.startswith("opsagent-testops 0.1: ops_bad, ops_good")

    assert f[("ops_good", "declaration")][0] == "ok"
    assert "time limit 60 s (declaration), thread" in f[("ops_good", "declaration")][1]
    assert f[("ops_good", "sample 1")] == ("ok", '{"count": 1, "name": "a"}')
    assert f[("ops_good", "sample 2")][0] == "ok"
    status, detail = f[("ops_good", "credential ops_token")]
    assert status == "ok"
    assert "mode 0600" in detail and "JWT" in detail and "expires 2030-01-01 00:00 UTC" in detail
    assert f[("ops_good", "credential ops_extra")][0] == "ok"
    assert f[("ops_good", "credential ops_extra")][1].startswith("optional, not configured")
    assert f[("ops_good", "program sh")][0] == "ok"
    assert f[("ops_good", "service")] == ("ok", "http://127.0.0.1:1/svc (credentials: ops_token)")
    assert f[("ops_good", "quota")] == ("warn", "80% used")

    assert f[("ops_bad", "sample 1")][0] == "ok"
    assert f[("ops_bad", "sample 2")] == (
        "fail", "does not fit the input schema: $.name: expected a string, got number 5")
    status, detail = f[("ops_bad", "credential ops_unsafe")]
    assert status == "fail" and "has mode 0666" in detail
    status, detail = f[("ops_bad", "program opsagent-no-such-program")]
    assert status == "fail" and "not found on the jobs' PATH" in detail
    assert f[("ops_bad", "own checks")] == (
        "fail", "capability_checks raised RuntimeError: catalogue down")
    # Built-ins are checked too (their samples).
    assert f[("health_ping", "sample 1")][0] == "ok"
    assert SECRET not in done.stdout + done.stderr


def test_one_capability_as_a_table_exits_zero_when_all_is_well(config):
    done = selftest(config, "--capability", "ops_good")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SUBJECT", "CHECK", "STATUS", "DETAIL"]
    assert any(line.split()[:3] == ["ops_good", "quota", "WARN"] for line in lines[1:-2])
    assert not [line for line in lines if line.startswith("ops_bad")]
    assert [line for line in lines if line.startswith("plugin testops")]
    # The other warning: anyone who can write to the queue may call it.
    assert any(line.split()[:3] == ["access", "ops_good", "WARN"] for line in lines)
    assert lines[-1].endswith("2 warning(s), 0 failed")
    unknown = selftest(config, "--capability", "nope", "--json")
    assert unknown.returncode == 1
    assert by_check(json.loads(unknown.stdout))[("nope", "installed")][1].startswith(
        "no capability 'nope'; known: ")


def test_unwritable_directories_and_a_broken_plugin_fail(config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    text = config.read_text().replace(str(tmp_path / "cache"), str(blocker / "cache"))
    config.write_text(text.replace(str(tmp_path / "state"), "/proc/opsagent-selftest/state"))
    done = selftest(config, "--json", paths=(SITEOPS, SITEBROKEN))
    assert done.returncode == 1
    f = by_check(json.loads(done.stdout))
    assert f[("host", "cache directory")] == (
        "fail", f"{blocker / 'cache'} cannot be created: {blocker} is not a directory")
    status, detail = f[("host", "state directory")]
    assert status == "fail" and "cannot create it in /proc" in detail
    status, detail = f[("plugin testbroken", "load")]
    assert status == "fail" and detail.startswith("opsagent-testbroken 0.3: ImportError")
    assert f[("health_ping", "declaration")][0] == "ok"


def test_a_configuration_error_is_a_failed_check(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[host]\nnamespace = 5\n")
    done = selftest(bad, "--json")
    assert done.returncode == 1
    status, detail = by_check(json.loads(done.stdout))[("host", "configuration")]
    assert status == "fail" and "host.namespace" in detail


@pytest.mark.broker
def test_live_health_ping_through_the_broker(host_factory, tmp_path):
    host = host_factory().start()
    done = selftest(host.config, "--live", "--capability", "health_ping", "--json",
                    paths=(SITECAPS,))
    assert done.returncode == 0, done.stdout + done.stderr
    status, detail = by_check(json.loads(done.stdout))[("broker", "health_ping")]
    assert status == "ok" and detail.startswith("pong from host (pid ")
    nobody = host_factory(extra={"broker": {"hosts": ["127.0.0.1:9"]}})
    done = selftest(nobody.config, "--live", "--capability", "health_ping", "--json",
                    paths=(SITECAPS,))
    assert done.returncode == 1
    status, detail = by_check(json.loads(done.stdout))[("broker", "health_ping")]
    assert status == "fail" and "unreachable" in detail


def test_it_says_where_each_setting_came_from_and_the_file_wins(tmp_path):
    """The old unit's variables are read as the old agent read them; the file wins."""
    path = tmp_path / "opsagent.toml"
    path.write_text(toml({
        "host": {"cache_dir": str(tmp_path / "cache"), "state_dir": str(tmp_path / "state")},
        "broker": {"queue": "/queue/from.the.file"},
        "capability.fetch_payload_log": {"account": "from-the-file"},
    }))
    old_unit = {
        "SWF_MONITOR_URL": "https://monitor.example/swf-monitor",
        "SWFMON_TOKEN": SECRET,
        "EPICPROD_OPS_QUEUE": "/queue/from.the.environment",
        "EPICPROD_FETCH_TIMEOUT": "240",
        "RUCIO_URL": "https://rucio.example:443",
        "RUCIO_ACCOUNT": "from-the-environment",
        "X509_USER_PROXY": str(tmp_path / "longproxy-for-rucio"),
    }
    env = {**os.environ, **old_unit,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    done = subprocess.run([*OPSAGENT, "--config", str(path), "selftest", "--json",
                           "--capability", "fetch_payload_log"],
                          env=env, capture_output=True, text=True, timeout=120)
    f = by_check(json.loads(done.stdout))
    assert f[("setting", "broker.queue")] == (
        "ok", f"'/queue/from.the.file' (config file {path})")
    assert f[("setting", "monitor.enabled")] == (
        "ok", "True (environment variable SWF_MONITOR_URL)")
    assert f[("setting", "monitor.url")][1].endswith("(environment variable SWF_MONITOR_URL)")
    assert "time limit 240 s (environment variable EPICPROD_FETCH_TIMEOUT)" in (
        f[("fetch_payload_log", "declaration")][1])
    assert f[("fetch_payload_log", "setting rucio_url")] == (
        "ok", "'https://rucio.example:443' (environment variable RUCIO_URL)")
    assert f[("fetch_payload_log", "setting account")] == (
        "ok", f"'from-the-file' (config file {path})")
    status, detail = f[("fetch_payload_log", "credential x509_proxy")]
    assert status == "fail" and "longproxy-for-rucio" in detail
    assert SECRET not in done.stdout + done.stderr


def test_live_notify_test_posts_through_each_rule(host_factory, tmp_path):
    from opsagent.testing.mattermost import FakeMattermost

    with FakeMattermost() as mm:
        url = mm.hook("ops")
        cred = tmp_path / "mattermost_ops"
        cred.touch(mode=0o600)
        cred.write_text(url)
        host = host_factory(extra={
            "credentials.mattermost_ops": {"file": str(cred)},
            "notify": [{"name": "ops", "url_credential": "mattermost_ops",
                        "msg_types": ["submit_*"]}]}).start()
        done = selftest(host.config, "--live", "--notify-test", "--json", paths=(SITECAPS,))
        checks = by_check(json.loads(done.stdout))
        assert checks[("notify", "ops")][0] == "ok"
        assert checks[("notify", "test ops")] == ("ok", "posted to 127.0.0.1 (HTTP 200)")
        [posted] = mm.posts("ops")
        assert posted["text"].startswith(":wave: opsagent selftest: a test notification of "
                                         "rule ops from host at ")
        assert posted["props"]["opsagent_id"].startswith("ops/test/")
        assert url.rsplit("/", 1)[1] not in done.stdout + done.stderr

        mm.set("ops", "disabled")
        done = selftest(host.config, "--live", "--notify-test", "--json",
                        "--capability", "health_ping", paths=(SITECAPS,))
        assert done.returncode == 1
        status, detail = by_check(json.loads(done.stdout))[("notify", "test ops")]
        assert status == "fail"
        assert detail == "127.0.0.1 refused it: HTTP 403 web.incoming_webhook.disabled.app_error"
        assert selftest(host.config, "--notify-test", paths=(SITECAPS,)).returncode == 2
