"""What the host offers its own control capabilities (``health_ping``, ``shutdown``).

A control job's ``config`` is a :class:`Control`: who answers, and the one thing a
control request may ask of the host.  Nothing else of the host is in reach.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs


@attrs.frozen
class Control:
    #: ``[host] instance``: the name a pong or a shutdown_ack carries.
    instance: str
    pid: int
    #: Stop intake, drain, exit 100 (``shutdown``), saying why.
    request_shutdown: Callable[[str], None]
