"""The sd_notify protocol: tell systemd when the host is ready, what it is doing, that it
is alive, and that it is stopping -- one datagram per message on ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.  ``WATCHDOG=1`` is sent
at half of ``WatchdogSec=`` (``$WATCHDOG_USEC``), and only when the caller says the host
is healthy, so a wedged host is killed and restarted by systemd.  The variables are
removed from the environment once read, so no program the host starts can talk to
systemd in its name.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

from loguru import logger


class Notifier:
    """One service's channel to systemd."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", "")
        usec = env.pop("WATCHDOG_USEC", "")
        watchdog_pid = env.pop("WATCHDOG_PID", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]  # abstract namespace
        elif address.startswith("/"):
            self.address = address
        #: Seconds between two WATCHDOG=1, or None when systemd does not watch this process.
        self.watchdog_every: float | None = None
        if self.address and usec.isdigit() and int(usec) > 0:
            if not watchdog_pid or watchdog_pid == str(os.getpid()):
                self.watchdog_every = int(usec) / 1e6 / 2
        self._sock: socket.socket | None = None
        self._status = ""
        self._last_watchdog = 0.0
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` lines as one message; False when it could not be sent."""
        if self.address is None:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot notify systemd on {}: {}", self.address, exc.strerror)
                self._failed = True
            return False

    def ready(self, status: str) -> None:
        self._status = status
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        """``STATUS=text``, sent only when it changed."""
        if text != self._status:
            self._status = text
            self.notify(f"STATUS={text}")

    def watchdog(self, healthy: bool, now: float | None = None) -> bool:
        """``WATCHDOG=1`` when one is due and ``healthy``; True when one was sent."""
        if self.watchdog_every is None or not healthy:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_watchdog < self.watchdog_every:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more before systemd gives up on the start or the stop."""
        self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self, status: str, seconds: float) -> None:
        self._status = status
        self.notify("STOPPING=1", f"STATUS={status}", f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
