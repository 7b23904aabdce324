"""Pieces of the chaos runs: a broker of their own, a caller that survives broker restarts,
and the host's journal and side-effect files read as the record of what happened."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import stomp
from common import ROOT
from opsagent.testing import port_open
from support import SERVICE_OF, SERVICES, broker_env, login


def artemis_home() -> str:
    """The Artemis distribution the main services directory holds (installed if missing),
    so that a broker of its own does not fetch it again."""
    found = sorted((SERVICES / "artemis-dist").glob("apache-artemis-*/bin/artemis"))
    if not found:
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "install", "artemis"],
                       env={**os.environ, "OPSAGENT_SERVICES": str(SERVICES)}, check=True,
                       capture_output=True, timeout=600)
        found = sorted((SERVICES / "artemis-dist").glob("apache-artemis-*/bin/artemis"))
    return str(found[-1].parents[1])


class PersistentBroker:
    """A broker of its own in persistent mode (Classic: KahaDB; Artemis: its journal) on its
    own port and services directory; ``kind`` is ``classic`` or ``artemis``."""

    def __init__(self, services_dir: Path, port: int, kind: str = "classic") -> None:
        self.port = port
        self.kind = kind
        self.service = SERVICE_OF[kind]
        prefix = self.service.upper()
        self.env = {**os.environ, "OPSAGENT_SERVICES": str(services_dir),
                    f"{prefix}_PERSISTENT": "true", f"{prefix}_STOMP_PORT": str(port)}
        if kind == "artemis":
            self.env["ARTEMIS_HOME"] = artemis_home()
        self.script = str(ROOT / "scripts" / "services.sh")
        self.services_dir = services_dir

    def _ctl(self, cmd: str) -> None:
        subprocess.run([self.script, cmd, self.service], env=self.env, check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._ctl("start")

    @property
    def connection(self) -> dict[str, str]:
        """Where and as whom clients connect (the service's env file, once started)."""
        return broker_env(self.kind, self.services_dir)

    def stop(self) -> None:
        self._ctl("stop")

    def up(self) -> bool:
        return port_open("127.0.0.1", self.port)


class ChaosCaller:
    """Sends requests with broker receipts and collects events; reconnects by itself.

    A request whose receipt did not come back is sent again with the same request id:
    the host's journal makes the second copy harmless, so sending is at-least-once too.
    """

    def __init__(self, broker: dict[str, str], queue: str, topic: str) -> None:
        self.broker = broker
        self.queue = queue
        self.topic = topic
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.receipts: dict[str, threading.Event] = {}
        self.conn: stomp.Connection12 | None = None
        self.resends = 0
        #: The sender thread and the fault loop both reconnect after a broker restart: one
        #: at a time, or two live subscriptions would each receive every event.
        self._reconnecting = threading.Lock()

    def _listener(self) -> stomp.ConnectionListener:
        outer = self

        class Listener(stomp.ConnectionListener):
            def on_message(self, frame: Any) -> None:
                body = json.loads(frame.body)
                with outer.cond:
                    outer.events.append((time.monotonic(), body))
                    outer.cond.notify_all()

            def on_receipt(self, frame: Any) -> None:
                got = outer.receipts.get(frame.headers.get("receipt-id", ""))
                if got is not None:
                    got.set()

        return Listener()

    def connect(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                conn = stomp.Connection12(
                    [(self.broker["ACTIVEMQ_HOST"], int(self.broker["ACTIVEMQ_PORT"]))],
                    auto_decode=False, reconnect_attempts_max=1)
                conn.set_listener("chaos", self._listener())
                conn.connect(*login(self.broker, "web").values(), wait=True)
                conn.transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.subscribe(self.topic, id="topic", ack="auto")
                self.conn = conn
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)

    def ensure(self, timeout: float = 120.0) -> None:
        """Connected and subscribed, reconnecting if the connection is gone."""
        with self._reconnecting:
            if self.conn is None or not self.conn.is_connected():
                self.close()
                self.connect(timeout)

    def send(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        while True:
            self.ensure()
            receipt = uuid.uuid4().hex
            got = self.receipts[receipt] = threading.Event()
            try:
                assert self.conn is not None
                self.conn.send(self.queue, raw, headers={"persistent": "true",
                                                         "receipt": receipt})
                if got.wait(5):
                    return
            except Exception:  # noqa: BLE001,S110 - any failure: reconnect and send again
                pass
            finally:
                self.receipts.pop(receipt, None)
            self.resends += 1
            with self._reconnecting:
                self.close()

    def events_since(self, t: float) -> list[dict[str, Any]]:
        with self.cond:
            return [e for at, e in self.events if at >= t]

    def first_event_after(self, t: float, timeout: float) -> float | None:
        """Seconds from ``t`` to the first job event received after it (reconnecting)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.ensure(timeout=max(1.0, end - time.monotonic()))
            except Exception:  # noqa: BLE001
                continue
            with self.cond:
                for at, e in self.events:
                    if at >= t and "outcome" in e:
                        return at - t
                self.cond.wait(0.2)
        return None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001,S110
                pass


def journal_rows(state_dir: Path) -> dict[str, tuple[str, int, int]]:
    """``job id -> (state, published, attempts)`` from the host's journal."""
    path = state_dir / "journal.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT id, state, published, attempts FROM jobs").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def run_counts(cache_dir: Path) -> dict[str, int]:
    """``n -> how many times the side-effect work ran`` (lines of its ``.runs`` file)."""
    base = cache_dir / "side-effects"
    if not base.exists():
        return {}
    return {p.stem: len(p.read_text().splitlines()) for p in base.glob("*.runs")}


def done_count(cache_dir: Path) -> int:
    try:
        return sum(1 for e in os.scandir(cache_dir / "side-effects")
                   if e.name.endswith(".done"))
    except FileNotFoundError:
        return 0





def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def alive(pids: set[int]) -> set[int]:
    left = set()
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            left.add(p)
    return left
