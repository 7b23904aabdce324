"""A capability's declaration and a job for calling its doer directly, as the host would."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from opsagent.capability import Capability
from opsagent.credentials.store import Credential, to_env
from opsagent.host import config as configuration
from opsagent.host import plugins
from opsagent.job import Job, MemoryNotes, Notes


def declared(module: ModuleType) -> dict[str, Capability]:
    """The capabilities ``module`` registers, by msg_type, loaded as the host loads them.

    Raises :class:`~opsagent.host.plugins.PluginError` when the host would refuse one.
    """
    registry = plugins.load(
        strict=True, entry_points_=[], extra_modules=[(module.__name__, module)]
    )
    return dict(registry.capabilities)


def make_job(
    capability: Capability,
    *,
    cache_dir: Path,
    config: Any = None,
    credentials: Mapping[str, Credential] | None = None,
    env: Mapping[str, str] | None = None,
    notes: Notes | None = None,
    job_id: str = "job-0001",
    attempt: int = 1,
    time_limit: float | None = None,
) -> Job:
    """A :class:`~opsagent.job.Job` for ``capability`` like the one the host builds.

    ``config`` is the capability's config object, or a dict structured as the host
    structures a ``[capability.<msg_type>]`` table (``None``: the config class's
    defaults).  Of ``credentials`` the job gets only those the capability declares, as
    the host hands them over; ``env`` defaults to the host's allow-listed environment
    plus those credentials.  ``time_limit`` stands for a host's ``[capability.<msg_type>]``
    override of the declared one.
    """
    if config is None or isinstance(config, dict):
        config = configuration.section_from_table(
            dict(config or {}), capability.config, capability.msg_type, "<make_job>"
        )
    given = {n: c for n, c in (credentials or {}).items() if n in capability.credentials}
    if env is None:
        env = {k: os.environ[k] for k in configuration.ENV_ALLOW if k in os.environ}
        env = {**env, "SWF_TMP_DIR": str(cache_dir), **to_env(given)}
    return Job(
        id=job_id,
        msg_type=capability.msg_type,
        cache_dir=cache_dir,
        time_limit=capability.time_limit if time_limit is None else time_limit,
        config=config,
        credentials=given,
        env=dict(env),
        notes=notes if notes is not None else MemoryNotes(),
        attempt=attempt,
    )
