"""Helpers for the host's integration tests: a host process and a caller on the real broker
(ActiveMQ Classic or Artemis: the ``broker`` fixture's ``BROKER`` says which)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import stomp
from opsagent.testing import toml_text as toml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = Path(os.environ.get("OPSAGENT_SERVICES", ROOT / ".services"))
SITECAPS = ROOT / "tests" / "sitecaps"
SITEBROKEN = ROOT / "tests" / "sitebroken"
SITECHAIN = ROOT / "tests" / "sitechain"
OPSAGENT = [sys.executable, "-m", "opsagent.cli.main"]


def service_env(name: str, services: Path = SERVICES) -> dict[str, str]:
    """The ``KEY=VALUE`` lines a running service left for its clients (scripts/services.sh)."""
    path = services / f"{name}.env"
    if not path.exists():
        raise RuntimeError(f"{name} is not running: start it with `scripts/services.sh start "
                           f"{name}` (`make test` does)")
    return dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)


#: The brokers the tests run on (``--broker``), and the service that runs each.
BROKERS = ("classic", "artemis")
SERVICE_OF = {"classic": "activemq", "artemis": "artemis"}


def broker_env(kind: str, services: Path = SERVICES) -> dict[str, str]:
    """Where and as whom to reach the test broker ``kind`` (``classic`` or ``artemis``):
    its service's env file with the keys the host reads in production (``ACTIVEMQ_HOST``,
    ``ACTIVEMQ_PORT``, ...; Artemis's file says ``ARTEMIS_*``), and ``BROKER``: the kind."""
    env = service_env(SERVICE_OF[kind], services)
    if kind == "artemis":
        env = {("ACTIVEMQ" + k[len("ARTEMIS"):] if k.startswith("ARTEMIS_") else k): v
               for k, v in env.items()} | {"ARTEMIS_HOME": env.get("ARTEMIS_HOME", "")}
    return {**env, "BROKER": kind}





@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A filesystem of ``size`` (``4m``) mounted at ``where``, made here, for a test."""
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(where: Path) -> Path:
    """Fill the filesystem at ``where`` with one file; remove it to free the space."""
    filler = where / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True,
                   check=False)
    return filler


class HostProcess:
    """``opsagent run`` in a subprocess with its own queue, topic, cache and state."""

    def __init__(self, tmp: Path, broker: dict[str, str], *, name: str = "host",
                 queue: str | None = None, topic: str | None = None,
                 extra: dict[str, dict[str, Any]] | None = None,
                 paths: tuple[Path, ...] = (SITECAPS,), env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        # Artemis takes exclusivity from its configuration, not from the SUBSCRIBE: the test
        # brokers make every queue named exclusive.* exclusive (scripts/services.d/).
        exclusive = bool((extra or {}).get("broker", {}).get("exclusive"))
        self.queue = queue or (f"/queue/{'exclusive.' if exclusive else ''}test."
                               f"{uuid.uuid4().hex[:12]}")
        self.broker_login = login(broker, "host")
        self.topic = topic or f"/topic/test.{uuid.uuid4().hex[:12]}"
        raw: dict[str, dict[str, Any]] = {
            "host": {"instance": name, "cache_dir": str(tmp / "cache"),
                     "state_dir": str(tmp / "state"), "drain_seconds": 5,
                     "kill_grace_seconds": 1},
            "broker": {"hosts": [f"{broker['ACTIVEMQ_HOST']}:{broker['ACTIVEMQ_PORT']}"],
                       **self.broker_login, "queue": self.queue, "topic": self.topic,
                       "heartbeat_ms": 10000,
                       "reconnect_max_delay": 1.0},
        }
        for section, values in (extra or {}).items():
            if isinstance(values, list):
                raw[section] = values  # an array of tables ([[notify]])
            else:
                raw.setdefault(section, {}).update(values)
        self.config = tmp / f"{name}.toml"
        self.config.write_text(toml(raw))
        self.log = tmp / f"{name}.log"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
                    **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> HostProcess:
        self._log = open(self.log, "ab")  # noqa: SIM115 - closed in wait()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([*OPSAGENT, "--config", str(self.config), "run"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            self.wait_log("subscribed to", timeout=20)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10.0, count: int = 1) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.text().count(needle) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"host exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout} s:\n{self.text()[-3000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.signal(signal.SIGTERM)
        try:
            return self.wait(30)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None


def login(broker: dict[str, str], who: str = "web") -> dict[str, str]:
    """``user`` and ``password`` of one of the test broker's users: ``host`` (the host's
    own), ``web`` (the web tier) or ``outsider`` (may connect, allowed nothing)."""
    prefix = {"host": "ACTIVEMQ", "web": "ACTIVEMQ_WEB", "outsider": "ACTIVEMQ_OUTSIDER"}[who]
    return {"user": broker[f"{prefix}_USER"], "password": broker[f"{prefix}_PASSWORD"]}


def connect(broker: dict[str, str], who: str = "web", **kwargs: Any) -> stomp.Connection12:
    """A raw stomp.py connection to the test broker, logged in as ``who``."""
    conn = stomp.Connection12([(broker["ACTIVEMQ_HOST"], int(broker["ACTIVEMQ_PORT"]))],
                              **kwargs)
    conn.connect(*login(broker, who).values(), wait=True)
    return conn


class Caller:
    """A STOMP client standing for the web tier: sends requests, collects events and replies.
    ``who`` is the broker user it logs in as (see :func:`login`)."""

    def __init__(self, broker: dict[str, str], queue: str, topic: str,
                 namespace: str = "prodops", who: str = "web") -> None:
        self.queue = queue
        self.topic = topic
        self.namespace = namespace
        self.reply_to = f"/queue/test.reply.{uuid.uuid4().hex[:12]}"
        self.events: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.conn = stomp.Connection12([(broker["ACTIVEMQ_HOST"], int(broker["ACTIVEMQ_PORT"]))],
                                       auto_decode=False)
        outer = self

        class Listener(stomp.ConnectionListener):
            def on_message(self, frame: Any) -> None:
                body = json.loads(frame.body)
                with outer.cond:
                    if frame.headers["destination"] == outer.topic:
                        outer.events.append(body)
                    else:
                        outer.replies.append(body)
                    outer.cond.notify_all()

        self.conn.set_listener("caller", Listener())
        self.conn.connect(*login(broker, who).values(), wait=True)
        self.conn.transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.subscribe(topic, id="topic", ack="auto")
        self.conn.subscribe(self.reply_to, id="reply", ack="auto")

    def send(self, msg_type: str, payload: dict[str, Any] | None = None, *,
             reply: bool = True, persistent: bool = True, **envelope: Any) -> str:
        request_id = envelope.pop("request_id", None) or uuid.uuid4().hex
        body = {"msg_type": msg_type, "namespace": self.namespace, "request_id": request_id,
                **({"reply_to": self.reply_to} if reply else {}), **envelope, **(payload or {})}
        if envelope.get("namespace", "x") is None:
            body.pop("namespace")
        self.send_raw(json.dumps(body).encode(), persistent=persistent)
        return request_id

    def send_raw(self, raw: bytes, persistent: bool = True) -> None:
        self.conn.send(self.queue, raw, headers={"persistent": "true" if persistent else "false"})

    def events_for(self, request_id: str) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events
                    if request_id in (e.get("request_id"), e.get("job_id"))]

    def wait_event(self, request_id: str, timeout: float = 20.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [e for e in self.events
                         if request_id in (e.get("request_id"), e.get("job_id"))]
                if found:
                    return found[0]
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no event for {request_id} within {timeout} s")
                self.cond.wait(left)

    def wait_reply(self, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.replies:
                    if pred(r):
                        return r
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching reply within {timeout} s: {self.replies}")
                self.cond.wait(left)

    def close(self) -> None:
        try:
            self.conn.disconnect()
        except Exception:
            pass


def processes_with(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]
