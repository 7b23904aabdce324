"""`opsagent send` for cron users: publishing is retried, and only a total failure fails."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

from support import OPSAGENT, toml


class DroppingProxy:
    """A loopback TCP proxy to the broker that cuts the first ``drop`` connections at SEND.

    The connection is established and STOMP-connected through it; the moment the client
    sends a SEND frame the connection is closed without forwarding it -- a broker that
    went away between connecting and publishing.
    """

    def __init__(self, host: str, port: int, drop: int) -> None:
        self.upstream = (host, port)
        self.drop = drop
        self.dropped = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if outbound and b"SEND\n" in data and self.dropped < self.drop:
                    self.dropped += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.server.close()


def send_through(proxy: DroppingProxy, host, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    config = tmp / "send.toml"
    login = host.broker_login
    config.write_text(toml({"broker": {"hosts": [f"127.0.0.1:{proxy.port}"], **login,
                                       "queue": host.queue, "topic": host.topic}}))
    return subprocess.run([*OPSAGENT, "--config", str(config), "send", *args],
                          capture_output=True, text=True, env=host.env, timeout=60)


def test_a_publish_cut_off_is_retried_and_the_request_arrives_once(host_factory, caller_for,
                                                                   broker, tmp_path):
    host = host_factory().start()
    caller = caller_for(host)
    proxy = DroppingProxy(broker["ACTIVEMQ_HOST"], int(broker["ACTIVEMQ_PORT"]), drop=2)
    try:
        done = send_through(proxy, host, tmp_path, "test_echo", "text=cron", "request_id=cron-1",
                            "--tries", "3")
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert proxy.dropped == 2
    assert done.stderr.count("try ") == 2 and "try 2 of 3" in done.stderr
    assert caller.wait_event("cron-1")["text"] == "cron"
    assert len(caller.events_for("cron-1")) == 1


def test_exit_is_non_zero_only_when_every_try_failed(host_factory, broker, tmp_path):
    host = host_factory().start()
    proxy = DroppingProxy(broker["ACTIVEMQ_HOST"], int(broker["ACTIVEMQ_PORT"]), drop=2)
    try:
        done = send_through(proxy, host, tmp_path, "test_echo", "--tries", "2")
    finally:
        proxy.close()
    assert done.returncode == 75
    assert "try 2 of 2" in done.stderr
    assert "test_echo not sent: every try failed" in done.stderr
