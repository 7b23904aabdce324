"""``[capability.panda_task_operation]`` and ``[capability.panda_task_operations]``.

The job's time limit is the old agent's pair: the operation's own budget (120 s, the
doer's ``--timeout``; for a batch plus one second per item after the first) and a
backstop of 30 s on top, inside which the capability still reports every item and
tells the monitor.  So the operation's budget is ``time_limit - backstop``: a host that
raises ``time_limit`` raises the budget.
"""

from __future__ import annotations

import math
import os
import sys

import attrs
from opsagent import http_url, positive
from opsagent_submit_task import config as submit_config

#: The operation's own budget, seconds (the old doer's ``--timeout 120``).
OPERATION_SECONDS = 120.0
#: The backstop on top of it (the old agent's ``+30``).
BACKSTOP_SECONDS = 30.0
#: PanDA rate-limits task commands: a batch sends at most one a second.
SEND_INTERVAL = 1.0

#: Set by the capability itself; a ``panda_env`` entry may not override them: those of
#: ``submit_task``, and the proxy (an EVGEN submission copies its own in).
RESERVED_ENV = submit_config.RESERVED_ENV | {"X509_USER_PROXY"}


def paced_seconds(n_items: int, interval: float = SEND_INTERVAL) -> float:
    """The pacing of a batch of ``n_items`` (``ceil(interval * (n - 1))``)."""
    return float(math.ceil(interval * max(0, n_items - 1)))


_panda_env = submit_config.env_names(RESERVED_ENV)


def _strip(value: object) -> object:
    return value.rstrip("/") if isinstance(value, str) else value


@attrs.frozen
class PandaConfig:
    """Settings shared by the PanDA capabilities; every key has a default.

    ``monitor_url`` (default ``$SWF_MONITOR_HTTP_URL``) is where the task-operation
    states, the Capcom notices and the catalogue are; ``public_url`` (default
    ``monitor_url``) is the base of the links in the notices.  ``panda_env`` holds the
    site's panda-client variables (``PANDA_URL_SSL``...); the capability sets
    ``PANDA_AUTH=oidc``, ``PANDA_AUTH_VO=<vo>`` and ``PANDA_CONFIG_ROOT`` itself.
    """

    monitor_url: str = attrs.field(
        factory=lambda: os.environ.get("SWF_MONITOR_HTTP_URL", "").rstrip("/"),
        converter=_strip,
        validator=http_url,
    )
    public_url: str = attrs.field(default="", converter=_strip, validator=http_url)
    ca_bundle: str | None = None
    vo: str = "EIC.production"
    #: The environment panda-client is installed in (its ``bin/python`` runs the calls).
    panda_sys: str = attrs.field(factory=lambda: os.environ.get("PANDA_SYS") or sys.prefix)
    panda_env: dict[str, str] = attrs.field(factory=dict, validator=_panda_env)
    #: Seconds of the job's time limit kept back to report every item and tell the monitor.
    backstop: float = attrs.field(default=BACKSTOP_SECONDS, validator=positive)
    #: Each monitor request (state, notice), seconds.
    monitor_timeout: float = attrs.field(default=5.0, validator=positive)
    #: How long a pause or resume is read back before it counts as unverified.
    verify_seconds: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    verify_every: float = attrs.field(default=2.0, validator=positive)
    #: Seconds between two task commands of a batch; never below one (PanDA's rate limit).
    send_interval: float = attrs.field(default=SEND_INTERVAL, validator=attrs.validators.ge(1.0))
    kill_grace: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))

    @property
    def python(self) -> str:
        return os.path.join(self.panda_sys, "bin", "python")

    @property
    def link_base(self) -> str:
        return self.public_url or self.monitor_url

    def budget(self, time_limit: float) -> float:
        """The operation's own budget within a job of ``time_limit`` seconds."""
        return time_limit - self.backstop

    def check_time_limit(self, time_limit: float) -> None:
        """Raise ``ValueError`` naming the numbers unless the limit leaves a budget."""
        if self.budget(time_limit) <= self.monitor_timeout:
            raise ValueError(
                f"time limit {time_limit:g} s leaves no budget for the operation after the "
                f"backstop of {self.backstop:g} s and a monitor call of "
                f"{self.monitor_timeout:g} s; raise time_limit or lower backstop"
            )
