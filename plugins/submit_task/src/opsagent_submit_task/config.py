"""``[capability.submit_task]``: where the catalogue and panda-client are, and the budgets.

The job's time limit must be longer than everything the job may wait for -- two
catalogue calls, a PanDA look-up (when an earlier attempt was cut short), prun (and the
grace period to kill it), three record tries with their backoff -- or a task that PanDA
accepted would be reported as failed.  The time limit is the host's (``time_limit`` in
``[capability.submit_task]``, or the old ``EPICPROD_SUBMIT_TIMEOUT``), so a job whose
limit does not cover the budgets is refused before it does anything, with the numbers
in the message, and ``opsagent selftest`` shows the same as a failed ``budget`` check.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping

import attrs
from opsagent import doubling, from_env, http_url, positive

#: The declared time limit of a submission (the old agent's 300 s).
DEFAULT_TIME_LIMIT = 300.0

#: Set by the capability itself; a ``panda_env`` entry may not override them.
RESERVED_ENV = frozenset(
    {
        "PANDA_AUTH",
        "PANDA_AUTH_VO",
        "PANDA_CONFIG_ROOT",
        "PANDA_SYS",
        "VIRTUAL_ENV",
        "PANDA_AUTH_ID_TOKEN",
        "OIDC_AUTH_ID_TOKEN",
        "OIDC_AUTH_TOKEN_FILE",
        "OIDC_AUTH_VO",
        "HOME",
        "PATH",
    }
)

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
#: Time for what is not a network call or prun: sandbox set-up, token copy, clean-up.
SETUP_SECONDS = 5.0


#: panda-client's site variables, taken from the host's environment into ``panda_env``
#: when the section sets none (the old agent's doer inherited them).
PANDA_SITE_ENV = (
    "PANDA_URL",
    "PANDA_URL_SSL",
    "PANDACACHE_URL",
    "PANDAMON_URL",
    "PANDA_VERIFY_HOST",
)


def _site_env(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in PANDA_SITE_ENV if environ.get(name)}


def env_names(reserved: frozenset[str], see: str = "") -> Callable[..., None]:
    """An attrs validator of a ``panda_env`` table: variable names only, none of
    ``reserved`` (the capability sets those itself; ``see`` names where it says so)."""
    hint = f" (see {see})" if see else ""

    def check(_inst: object, attr: attrs.Attribute, value: dict[str, str]) -> None:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{attr.name}: {name!r} is not an environment variable name")
            if name in reserved:
                raise ValueError(
                    f"{attr.name}: {name} is set by the capability itself{hint}; remove it"
                )

    return check


_panda_env = env_names(RESERVED_ENV, "docs/submit_task.md")


@attrs.frozen
class SubmitConfig:
    """Settings of ``submit_task``; every key has a default except ``monitor_url``.

    ``monitor_url`` (default ``$SWF_MONITOR_HTTP_URL``) is the base the catalogue paths
    ``/pcs/api/prod-tasks/...`` are appended to.  ``panda_env`` holds the panda-client
    variables of the site (``PANDA_URL``, ``PANDA_URL_SSL``, ``PANDACACHE_URL``,
    ``PANDAMON_URL``, ``X509_CERT_DIR``...); the capability sets ``PANDA_AUTH=oidc``,
    ``PANDA_AUTH_VO=<vo>`` and ``PANDA_CONFIG_ROOT`` itself.
    """

    monitor_url: str = from_env(
        "SWF_MONITOR_HTTP_URL",
        default="",
        converter=lambda v: v.rstrip("/") if isinstance(v, str) else v,
        validator=http_url,
    )
    #: CA bundle for an https monitor_url (default: the system's).
    ca_bundle: str | None = None
    vo: str = "EIC.production"
    #: The environment panda-client is installed in (``$PANDA_SYS``; prun is ``bin/prun``).
    panda_sys: str = from_env("PANDA_SYS", factory=lambda: sys.prefix)
    #: Default: the site variables of :data:`PANDA_SITE_ENV` set in the host's environment.
    panda_env: dict[str, str] = from_env(
        *PANDA_SITE_ENV, factory=dict, combine=_site_env, validator=_panda_env
    )
    #: Limit of each catalogue request, in seconds.
    pcs_timeout: float = attrs.field(default=15.0, validator=positive)
    #: prun's own limit; at the limit prun and everything it started are killed.
    prun_timeout: float = attrs.field(default=180.0, validator=positive)
    kill_grace: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    record_tries: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: Wait before the second record try; doubled before each later one.
    record_backoff: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    #: Bytes of prun output kept (head and tail) for the reason of a failure.
    output_cap: int = attrs.field(default=64 * 1024, validator=attrs.validators.ge(4096))

    def backoffs(self) -> list[float]:
        """The waits between record tries."""
        return doubling(self.record_backoff, self.record_tries)

    def budget(self) -> list[tuple[str, float]]:
        """Everything one job may wait for, itemised."""
        return [
            ("catalogue look-ups", 2 * self.pcs_timeout),
            ("PanDA look-up", self.pcs_timeout),
            ("prun", self.prun_timeout),
            ("prun kill grace", self.kill_grace),
            (f"{self.record_tries} record tries", self.record_tries * self.pcs_timeout),
            ("record backoff", sum(self.backoffs())),
            ("set-up and clean-up", SETUP_SECONDS),
        ]

    def check_time_limit(self, time_limit: float) -> None:
        """Raise ``ValueError`` naming the numbers unless ``time_limit`` covers the budget."""
        items = self.budget()
        total = sum(s for _, s in items)
        if time_limit <= total:
            detail = " + ".join(f"{label} {s:g} s" for label, s in items)
            raise ValueError(
                f"time limit {time_limit:g} s is not longer than the inner budgets "
                f"({detail} = {total:g} s): a task PanDA accepted could be reported as "
                f"failed; raise the time limit (time_limit in [capability.submit_task], or "
                f"EPICPROD_SUBMIT_TIMEOUT) or lower prun_timeout, pcs_timeout or record_tries"
            )

    @property
    def prun(self) -> str:
        return os.path.join(self.panda_sys, "bin", "prun")

    @property
    def python(self) -> str:
        """The Python of the panda-client environment (asks PanDA about a task name)."""
        return os.path.join(self.panda_sys, "bin", "python")
