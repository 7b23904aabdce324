"""A datagram socket standing in for systemd's ``$NOTIFY_SOCKET`` in tests."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    """A datagram socket standing in for systemd; keeps (time, fields) of every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.cond = threading.Condition()
        self._open = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self._open:
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            with self.cond:
                self.messages.append((time.monotonic(), fields))
                self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 20.0) -> tuple[float, dict[str, str]]:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if pred(m[1]):
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such notification in {timeout} s: {self.messages}")
                self.cond.wait(left)

    def having(self, key: str, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
        with self.cond:
            return [m for m in self.messages if key in m[1] and m[0] >= since]

    def close(self) -> None:
        self._open = False
        self.thread.join(2)
        self.sock.close()
