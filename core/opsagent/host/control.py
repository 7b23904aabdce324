"""What the host offers its own control capabilities (``health_ping``, ``shutdown``,
``request_status``).

A control job's ``config`` is a :class:`Control`: who answers, the one thing a control
request may ask of the host, and what its journal records of one job.  Nothing else of
the host is in reach.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class Control:
    #: ``[host] instance``: the name a pong or a shutdown_ack carries.
    instance: str
    pid: int
    #: Stop intake, drain, exit 100 (``shutdown``), saying why.
    request_shutdown: Callable[[str], None]
    #: What the journal records of a job, by id: ``state`` (``unknown``, ``accepted``,
    #: ``running``, ``finished``) and, once finished, the job's terminal ``event`` as it
    #: was published (``request_status``).
    status: Callable[[str], dict[str, Any]] = lambda job_id: {"job_id": job_id, "state": "unknown"}
