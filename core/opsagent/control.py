"""The host's handle for control capabilities (``health_ping``, ``shutdown``)."""

from __future__ import annotations

from typing import Protocol


class Control(Protocol):
    instance: str
    pid: int

    def request_shutdown(self, reason: str) -> None: ...
