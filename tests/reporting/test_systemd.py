"""systemd: the sd_notify protocol, the unit (verified, hardening scored), and the host
telling a notify socket when it is ready, what it does, that it lives, and that it stops."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from loguru import logger
from notify_socket import NotifySocket
from opsagent.host import config as configuration
from opsagent.host import daemon as hostmod
from opsagent.host import plugins
from opsagent.host.config import BrokerConfig, HostConfig
from opsagent.host.daemon import Host
from opsagent.reporting.systemd import Notifier
from opsagent.transport.memory import MemoryBroker, MemoryTransport
from opsagent.transport.stomp import StompTransport
from support import ROOT, connect, login, toml

UNITS = ROOT / "contrib" / "systemd"
INSTALLED_AT = "/opt/opsagent/bin/opsagent"
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")
MAX_EXPOSURE = 2.5


# -- the unit ----------------------------------------------------------------------------


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: scripts/venv.sh installs the systemd package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def installed(tmp: Path, name: str = "opsagent.service") -> Path:
    """The unit as installed, with ExecStart pointing at this checkout's opsagent."""
    exe = Path(sys.executable).parent / "opsagent"
    assert os.access(exe, os.X_OK), exe
    text = (UNITS / "opsagent.service").read_text()
    assert INSTALLED_AT in text
    unit = tmp / name
    unit.write_text(text.replace(INSTALLED_AT, str(exe)))
    return unit


def second_instance(tmp: Path) -> Path:
    unit = installed(tmp, "opsagent-testbed.service")
    shutil.copytree(UNITS / "opsagent-testbed.service.d", tmp / "opsagent-testbed.service.d")
    return unit


def takeover(tmp: Path) -> Path:
    """The unit under the old agent's name, with its drop-in (docs/cutover.md)."""
    unit = installed(tmp, "epicprod-ops-agent.service")
    shutil.copytree(
        UNITS / "epicprod-ops-agent.service.d", tmp / "epicprod-ops-agent.service.d"
    )
    return unit


def directives(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file and its drop-ins, in order (empty resets)."""
    files = [unit, *sorted((unit.parent / f"{unit.name}.d").glob("*.conf"))]
    out: dict[str, list[str]] = {}
    for f in files:
        for line in f.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, _, value = line.partition("=")
            out[key] = [] if value == "" else [*out.get(key, []), value]
    return out


def test_the_unit_and_a_second_instance_verify_without_a_single_warning(tmp_path):
    for unit in (installed(tmp_path), second_instance(tmp_path), takeover(tmp_path)):
        done = analyze("verify", str(unit))
        assert done.returncode == 0, done.stderr
        assert done.stdout + done.stderr == "", f"{unit.name}: {done.stderr}"


def test_the_send_timer_example_verifies_and_runs_a_retrying_send(tmp_path):
    exe = Path(sys.executable).parent / "opsagent"
    for name in ("opsagent-send-prune.service", "opsagent-send-prune.timer"):
        (tmp_path / name).write_text((UNITS / name).read_text().replace(INSTALLED_AT, str(exe)))
    done = analyze("verify", str(tmp_path / "opsagent-send-prune.timer"))
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == "", done.stderr
    found = directives(tmp_path / "opsagent-send-prune.service")
    assert found["Type"] == ["oneshot"]
    assert " send --tries " in found["ExecStart"][0]
    assert directives(tmp_path / "opsagent-send-prune.timer")["Persistent"] == ["true"]


def exposure(unit: Path) -> float:
    done = analyze("security", "--offline=true", "--no-pager", str(unit))
    found = EXPOSURE.search(done.stdout)
    assert found, done.stdout + done.stderr
    assert found.group(1) == unit.name
    return float(found.group(2))


def test_hardening_keeps_the_exposure_at_most_2_5(tmp_path):
    units = (installed(tmp_path), second_instance(tmp_path), takeover(tmp_path))
    scores = {u.name: exposure(u) for u in units}
    print(f"systemd-analyze security --offline=true: {scores}")
    assert all(score <= MAX_EXPOSURE for score in scores.values()), scores
    # The same measure tells an unhardened unit apart.
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nType=notify\nExecStart=/bin/true\n")
    assert exposure(bare) > MAX_EXPOSURE


def test_the_unit_declares_the_lifecycle_and_the_hardening_the_host_relies_on(tmp_path):
    d = {k: v[-1] if v else "" for k, v in directives(installed(tmp_path)).items()}
    all_values = directives(installed(tmp_path))
    assert d["Type"] == "notify" and d["NotifyAccess"] == "main"
    assert d["KillMode"] == "mixed" and d["Restart"] == "on-failure"
    assert d["SuccessExitStatus"] == str(hostmod.EXIT_DELIBERATE)
    assert set(d["RestartPreventExitStatus"].split()) == {
        str(hostmod.EXIT_CONFIG), str(hostmod.EXIT_DELIBERATE)}
    defaults = HostConfig()
    assert float(d["TimeoutStopSec"]) > defaults.drain_seconds + defaults.kill_grace_seconds
    assert 0 < float(d["WatchdogSec"]) <= 60
    assert int(d["StartLimitBurst"]) > 0 and int(d["StartLimitIntervalSec"]) > 0
    # Renewed in place, so read where they are at every job, never a copy frozen at start.
    assert {v.split(":")[0] for v in all_values["LoadCredential"]} == {"rucio_userpass"}
    env = dict(v.split("=", 1) for v in all_values["Environment"])
    assert env["X509_USER_PROXY"] == "/etc/opsagent/credentials/x509_proxy"
    assert env["PANDA_CONFIG_ROOT"] == "/var/lib/%N/panda"  # StateDirectory: writable
    assert d["ProtectSystem"] == "strict" and d["ProtectHome"] == "yes"
    assert d["PrivateTmp"] == "yes" and d["NoNewPrivileges"] == "yes"
    assert d["CapabilityBoundingSet"] == "" and all_values["CapabilityBoundingSet"] == []
    assert set(d["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert all_values["SystemCallFilter"][0] == "@system-service"
    assert "/data/swf-tmp" in d["ReadWritePaths"] and d["StateDirectory"] == "%N"
    old_name = directives(takeover(tmp_path))
    assert (old_name["User"][-1], old_name["Group"][-1]) == ("wenauseic", "eic")
    # Only the operator's token directory of /home, writable for a token written back.
    assert old_name["ProtectHome"][-1] == "tmpfs"
    assert old_name["BindPaths"] == ["-/home/wenauseic/.pathena"]
    assert old_name["LoadCredential"] == []
    assert old_name["SuccessExitStatus"] == [str(hostmod.EXIT_DELIBERATE)]
    testbed = directives(second_instance(tmp_path))
    assert testbed["ReadWritePaths"] == ["/data/swf-tmp-testbed"]
    assert testbed["LoadCredential"] == ["x509_proxy:/etc/opsagent/credentials/testbed/x509_proxy"]


def size_mib(value: str) -> int:
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    return int(float(value[:-1]) * units[value[-1]]) if value[-1] in units else int(value) >> 20


def test_the_unit_bounds_memory_and_tasks_and_one_job_s_oom_kill_spares_the_host(tmp_path):
    d = {k: v[-1] if v else "" for k, v in directives(installed(tmp_path)).items()}
    # The kernel killing one job must not make systemd stop the host with the rest.
    assert d["OOMPolicy"] == "continue"
    high, top = size_mib(d["MemoryHigh"]), size_mib(d["MemoryMax"])
    assert 0 < high < top
    # One job at its address-space limit fits, with the host beside it.
    assert top > HostConfig().job_memory_limit_mb + 512
    assert 64 <= int(d["TasksMax"]) <= 4096


# -- the protocol --------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path):
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def test_notifier_sends_each_message_once_and_the_watchdog_at_half_its_interval(notify_socket):
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "200000", "OTHER": "x"}
    n = Notifier(env)
    assert env == {"OTHER": "x"}, "programs the host starts must not talk to systemd"
    assert n.watchdog_every == pytest.approx(0.1)
    n.ready("up")
    n.status("up")  # unchanged: not sent
    n.status("busy")
    assert n.watchdog(True, now=100.0) and not n.watchdog(True, now=100.05)
    assert n.watchdog(True, now=100.11)
    assert not n.watchdog(False, now=200.0)
    n.stopping("bye", 40)
    n.extend_timeout(2.5)
    notify_socket.wait_for(lambda f: "EXTEND_TIMEOUT_USEC" in f and "STOPPING" not in f)
    got = [f for _, f in notify_socket.messages]
    assert got == [
        {"READY": "1", "STATUS": "up", "MAINPID": str(os.getpid())},
        {"STATUS": "busy"},
        {"WATCHDOG": "1"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "bye", "EXTEND_TIMEOUT_USEC": "40000000"},
        {"EXTEND_TIMEOUT_USEC": "2500000"},
    ]


def test_notifier_outside_systemd_and_for_another_process(tmp_path):
    quiet = Notifier({})
    assert not quiet.enabled and not quiet.notify("READY=1")
    other = Notifier({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "1000000",
                      "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.address == "\0abstract" and other.watchdog_every is None


# -- a host under a notify socket ------------------------------------------------------------


@pytest.mark.broker
def test_host_notifies_ready_status_watchdog_and_stopping(host_factory, caller_for,
                                                          notify_socket):
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"}
    host = host_factory(env=env).start(wait=False)
    t_ready, ready = notify_socket.wait_for(lambda f: f.get("READY") == "1")
    assert ready["MAINPID"] == str(host.proc.pid)
    assert "broker connected" in ready["STATUS"]
    before = [f for t, f in notify_socket.messages if t < t_ready]
    assert any(f.get("STATUS", "").startswith("connecting to ") for f in before), before
    assert not [f for f in before if "WATCHDOG" in f], "no WATCHDOG=1 before READY=1"
    caller = caller_for(host)
    caller.send("health_ping", {})
    assert caller.wait_reply(lambda r: r.get("msg_type") == "pong", timeout=5)

    # WATCHDOG=1 every WATCHDOG_USEC / 2 from the main loop.
    time.sleep(1.5)
    beats = [t for t, _ in notify_socket.having("WATCHDOG", since=t_ready)]
    assert len(beats) >= 4, beats
    assert min(b - a for a, b in zip(beats, beats[1:], strict=False)) >= 0.15

    # STATUS follows the work.
    rid = caller.send("test_sleep", {"seconds": 1.5})
    notify_socket.wait_for(lambda f: "1 job in flight" in f.get("STATUS", ""), timeout=5)
    assert caller.wait_event(rid)["outcome"] == "ok"
    since = time.monotonic()
    notify_socket.wait_for(lambda f: "0 jobs in flight" in f.get("STATUS", ""), timeout=5)

    # SIGTERM: STOPPING=1 with more time asked for than the drain budget, then exit 0.
    rid = caller.send("test_sleep", {"seconds": 1.0, "key": "stop"})
    host.wait_log("started (test_sleep", count=2)
    host.signal(signal.SIGTERM)
    assert host.wait(20) == 0
    t_stop, stopping = notify_socket.wait_for(lambda f: f.get("STOPPING") == "1", timeout=2)
    assert t_stop > since
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) >= (5 + 1) * 1_000_000  # drain + kill grace
    assert "draining 1 job(s)" in stopping["STATUS"]
    assert caller.wait_event(rid)["outcome"] == "ok"
    assert not [f for t, f in notify_socket.messages if t > t_stop and "READY" in f]


@pytest.mark.broker
def test_no_ready_while_the_broker_is_unreachable(host_factory, notify_socket):
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"}
    host = host_factory(env=env, extra={"broker": {"hosts": ["127.0.0.1:9"],
                                                   "connect_attempts": 3}})
    host.start(wait=False)
    assert host.wait(60) == hostmod.EXIT_UNREACHABLE
    notify_socket.wait_for(
        lambda f: f.get("STATUS", "").startswith("cannot start (exit status 75): broker"))
    got = [f for _, f in notify_socket.messages]
    assert not [f for f in got if "READY" in f or "WATCHDOG" in f], got
    assert [f for f in got if "try 2 of 3" in f.get("STATUS", "")]
    assert [f for f in got if int(f.get("EXTEND_TIMEOUT_USEC", 0)) > 0]


class DeafTransport(MemoryTransport):
    """Connected, but the receiver can be made deaf, or the broker unreachable."""

    deaf = False
    down = False

    @property
    def connected(self) -> bool:
        return not self.down and super().connected

    @property
    def receiving(self) -> bool:
        return not self.deaf and super().receiving

    def ensure(self, on_delivery):
        return False if self.down else super().ensure(on_delivery)


@contextlib.contextmanager
def watched_host(tmp_path, monkeypatch, notify_socket, transport_cls, instance):
    """A host on ``transport_cls`` (a MemoryTransport) under a systemd watchdog of 0.2 s,
    running in a thread until the block ends; yields (transport, runner, beats_during)."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    cfg_path = tmp_path / "host.toml"
    cfg_path.write_text(toml({"host": {"instance": instance, "cache_dir": str(tmp_path / "c"),
                                       "state_dir": str(tmp_path / "s")}}))
    cfg = configuration.load(cfg_path)
    builtin = [ep for ep in entry_points(group=plugins.GROUP)
               if ep.value == "opsagent.builtin"]
    transport = transport_cls(MemoryBroker(), cfg.broker.queue)
    host = Host(cfg, transport=transport, registry=plugins.load(entry_points_=builtin))
    runner = threading.Thread(target=host.run, kwargs={"install_signals": False}, daemon=True)
    runner.start()

    def beats_during(seconds: float) -> int:
        start = time.monotonic()
        time.sleep(seconds)
        return len([t for t, _ in notify_socket.having("WATCHDOG", since=start)])

    try:
        notify_socket.wait_for(lambda f: f.get("READY") == "1", timeout=10)
        yield transport, runner, beats_during
    finally:
        host.stop()
        runner.join(20)


def test_watchdog_stops_while_the_receiver_is_deaf_but_not_while_reconnecting(
        tmp_path, monkeypatch, notify_socket):
    with watched_host(tmp_path, monkeypatch, notify_socket, DeafTransport, "deaf") as (
            transport, _runner, beats_during):
        assert beats_during(0.6) >= 3
        transport.deaf = True
        time.sleep(0.15)
        assert beats_during(0.8) == 0, "a deaf host must not pet the watchdog"
        transport.deaf = False
        assert beats_during(0.6) >= 3
        transport.down = True  # the main loop is reconnecting: a restart would not help
        assert beats_during(0.6) >= 3
        assert "DISCONNECTED" in notify_socket.wait_for(
            lambda f: "DISCONNECTED" in f.get("STATUS", ""), timeout=3)[1]["STATUS"]


@pytest.mark.broker
def test_stomp_receiving_needs_a_live_receiver_that_hears_heart_beats(broker):
    queue = f"/queue/test.hb.{uuid.uuid4().hex[:8]}"
    cfg = BrokerConfig(hosts=[f"{broker['ACTIVEMQ_HOST']}:{broker['ACTIVEMQ_PORT']}"],
                       **login(broker, "host"), queue=queue, heartbeat_ms=500)
    entered, release = threading.Event(), threading.Event()

    def wedge(_delivery) -> None:
        entered.set()
        release.wait(30)

    transport = StompTransport(cfg, prefetch=10)
    assert not transport.receiving
    assert transport.ensure(wedge)
    try:
        time.sleep(2.0)  # idle for four heart-beat intervals
        assert transport.receiving, "heart-beats alone keep an idle receiver alive"
        sender = connect(broker)
        sender.send(queue, b"{}")
        sender.disconnect()
        assert entered.wait(5)
        end = time.monotonic() + 5
        while transport.receiving and time.monotonic() < end:
            time.sleep(0.05)
        assert not transport.receiving, "a receiver stuck in a callback is deaf"
    finally:
        release.set()
        transport.close()


class FailingTransport(MemoryTransport):
    """``ensure`` raises while ``failing``: a bug in a step of the main loop."""

    failing = False

    def ensure(self, on_delivery):
        if self.failing:
            raise RuntimeError("a bug in ensure")
        return super().ensure(on_delivery)


def test_a_failing_main_loop_step_is_logged_once_withholds_the_watchdog_and_passes(
        tmp_path, monkeypatch, notify_socket):
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(str(m)), level="ERROR")
    try:
        with watched_host(tmp_path, monkeypatch, notify_socket, FailingTransport,
                          "failing") as (transport, runner, beats_during):
            transport.failing = True
            time.sleep(0.15)
            assert beats_during(0.8) == 0, "a host whose loop fails must not pet the watchdog"
            assert runner.is_alive(), "the host outlives a failing step"
            failures = [m for m in logged if "a step of the main loop failed" in m]
            assert len(failures) == 1 and "RuntimeError: a bug in ensure" in failures[0]
            transport.failing = False
            assert beats_during(0.6) >= 3
    finally:
        logger.remove(sink)
    assert not runner.is_alive()
