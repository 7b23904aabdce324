"""One place that makes a job: :class:`JobFactory`.

Every :class:`~opsagent.job.Job` a capability receives is made here, whichever way it
runs -- a worker thread of the host, a job process (:mod:`opsagent.isolation.child`),
``opsagent do``, ``opsagent selftest``'s own checks, or the testing kit -- so that a
capability sees the same thing from each: its declaration with this host's overrides
(time limit above all), its ``[capability.<msg_type>]`` section structured into its
config class, only its declared credentials that are usable, and an environment of
the allow-listed variables, those credentials, ``SWF_TMP_DIR`` (the cache) and the
process mark (:data:`opsagent.isolation.proc.MARK`, the state directory, by which a
host finds what a predecessor's jobs left running).

A job process is told its job by a spec (JSON on its standard input, or through the
fork server): :meth:`JobFactory.spec` writes it, :func:`job_from_spec` reads it back
on the child side.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from opsagent.capability import Capability
from opsagent.credential import Credential
from opsagent.credentials import store as creds
from opsagent.credentials.redaction import declared_secrets
from opsagent.host import config as configuration
from opsagent.isolation import proc
from opsagent.job import Job, MemoryNotes, Notes
from opsagent.schema import unstructure
from opsagent.setting import env_source


def effective(cap: Capability, cfg: configuration.Config) -> Capability:
    """The declaration with the host's ``time_limit``/``concurrency``/``queue_limit``/
    ``memory_limit`` overrides (raises :class:`~opsagent.capability.DeclarationError`)."""
    over = configuration.overrides(cfg, cap)
    return attrs.evolve(cap, **over) if over else cap


def _from_environment(section: Any, table: Mapping[str, Any]) -> dict[str, Any]:
    """The section's settings the host took from its environment (``from_env`` fields the
    table does not set), to hand a job process as if configured: the job's own
    environment is the host's allow-list, without them."""
    if section is None:
        return {}
    return {
        f.name: unstructure(getattr(section, f.name))
        for f in attrs.fields(type(section))
        if f.name not in table and env_source(f)
    }


def availability(caps: Mapping[str, Capability], cfg: configuration.Config) -> creds.Availability:
    """Which of ``caps`` can run as far as their credentials go (not looked at yet: call
    ``refresh()``).  The host, ``opsagent do`` and ``opsagent plugins`` use this one check."""
    return creds.Availability(
        {
            m: (cap.credentials, cap.optional_credentials)
            for m, cap in caps.items()
            if not cap.control
        },
        cfg.credentials,
    )


def timed_out(cap: Capability, *, thread: bool) -> str:
    """The reason of a job that overran its time limit."""
    if thread:
        return (
            f"{cap.msg_type} did not finish within its time limit of {cap.time_limit:g} s "
            f"(thread job; its result will be discarded)"
        )
    return (
        f"{cap.msg_type} did not finish within its time limit of {cap.time_limit:g} s; "
        f"its process group was killed"
    )


class JobFactory:
    """Makes the jobs of a set of capabilities, built once from the configuration, the
    registry's capabilities and their credential availability.

    ``credentials`` maps a msg_type to its usable credentials; the host hands over
    :attr:`opsagent.credentials.store.Availability.usable`, which it keeps current (call
    :meth:`forget` when a capability's credentials changed: its environment is cached).
    """

    def __init__(
        self,
        capabilities: Mapping[str, Capability],
        *,
        cache_dir: Path,
        state_dir: Path | None,
        env_allow: list[str],
        configs: Mapping[str, Any] | None = None,
        tables: Mapping[str, dict[str, Any]] | None = None,
        credentials: Mapping[str, Mapping[str, Credential]] | None = None,
        notes: Notes | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.capabilities = dict(capabilities)
        self.cache_dir = cache_dir
        #: The process mark's value (None: no mark, for a test's job without a host).
        self.state_dir = state_dir
        self.env_allow = list(env_allow)
        self.configs = dict(configs or {})
        self.tables = dict(tables or {})
        self.credentials: Mapping[str, Mapping[str, Credential]] = credentials or {}
        self.notes: Notes = notes if notes is not None else MemoryNotes()
        #: Where the allow-listed variables are read (default: this process's environment).
        self.environ = os.environ if environ is None else environ
        self._envs: dict[str, dict[str, str]] = {}

    @classmethod
    def from_config(
        cls,
        cfg: configuration.Config,
        capabilities: Mapping[str, Capability],
        *,
        credentials: Mapping[str, Mapping[str, Credential]] | None = None,
        notes: Notes | None = None,
        learn: Callable[..., None] = lambda *secrets: None,
    ) -> JobFactory:
        """The factory of ``capabilities`` on the host ``cfg`` describes: overrides applied,
        each capability's section structured.  ``learn`` is given every declared secret
        config field, from the raw table first (an error may quote it).

        Raises :class:`~opsagent.capability.DeclarationError` for a bad override and
        :class:`~opsagent.host.config.ConfigError` for a bad section (an unknown key...).
        ``credentials``: by default looked at once, now (:func:`availability`).
        """
        caps = {m: effective(c, cfg) for m, c in capabilities.items()}
        configs: dict[str, Any] = {}
        tables: dict[str, dict[str, Any]] = {}
        for m, cap in caps.items():
            if cap.control:
                continue
            tables[m] = configuration.section_table(cfg, m, cap.config_section)
            learn(*declared_secrets(cap.config, tables[m]))
            configs[m] = configuration.section_from_table(tables[m], cap.config, m, cfg.source)
            learn(*declared_secrets(cap.config, configs[m]))
            tables[m] = {**tables[m], **_from_environment(configs[m], tables[m])}
        if credentials is None:
            found = availability(caps, cfg)
            found.refresh()
            credentials = found.usable
        return cls(
            caps,
            cache_dir=cfg.cache_dir,
            state_dir=cfg.state_dir,
            env_allow=cfg.host.env_allow,
            configs=configs,
            tables=tables,
            credentials=credentials,
            notes=notes,
        )

    def capability(self, msg_type: str) -> Capability:
        return self.capabilities[msg_type]

    def time_limit(self, msg_type: str) -> float:
        return self.capabilities[msg_type].time_limit

    def config(self, msg_type: str) -> Any:
        return self.configs.get(msg_type)

    def credentials_of(self, msg_type: str) -> Mapping[str, Credential]:
        return self.credentials.get(msg_type, {})

    def env(self, msg_type: str) -> dict[str, str]:
        """The environment of ``msg_type``'s jobs (cached until :meth:`forget`)."""
        env = self._envs.get(msg_type)
        if env is None:
            allowed = (*self.env_allow, *self.capabilities[msg_type].env_allow)
            env = {k: self.environ[k] for k in allowed if k in self.environ}
            env["SWF_TMP_DIR"] = str(self.cache_dir)
            if self.state_dir is not None:
                env[proc.MARK] = str(self.state_dir.resolve())
            env.update(creds.to_env(self.credentials_of(msg_type)))
            self._envs[msg_type] = env
        return env

    def process_env(self, msg_type: str, job_id: str) -> dict[str, str]:
        """The environment of one job process: :meth:`env` and the job's own mark."""
        return {**self.env(msg_type), proc.MARK_JOB: job_id}

    def forget(self, msg_type: str) -> None:
        """Drop a capability's cached environment (its credentials changed)."""
        self._envs.pop(msg_type, None)

    def job(
        self,
        msg_type: str,
        job_id: str,
        *,
        attempt: int = 1,
        interrupted: bool = False,
        notes: Notes | None = None,
    ) -> Job:
        """The job of ``msg_type`` that runs in this process."""
        return Job(
            id=job_id,
            msg_type=msg_type,
            cache_dir=self.cache_dir,
            time_limit=self.time_limit(msg_type),
            config=self.config(msg_type),
            credentials=self.credentials_of(msg_type),
            env=self.env(msg_type),
            notes=notes if notes is not None else self.notes,
            attempt=attempt,
            interrupted=interrupted,
        )

    def control_job(self, msg_type: str, job_id: str, control: Any) -> Job:
        """The job of a control capability (``health_ping``, ``shutdown``): its config is
        the host's :class:`~opsagent.host.control.Control`, nothing else."""
        return Job(
            id=job_id,
            msg_type=msg_type,
            cache_dir=self.cache_dir,
            time_limit=self.time_limit(msg_type),
            config=control,
        )

    def spec(
        self,
        msg_type: str,
        job_id: str,
        inp: Any,
        *,
        result: Path,
        journal: Path | None = None,
        attempt: int = 1,
        interrupted: bool = False,
        memory_limit: int = 0,
    ) -> dict[str, Any]:
        """What a job process is told (read back by :func:`job_from_spec`); its
        environment is :meth:`process_env`."""
        cap = self.capabilities[msg_type]
        return {
            "module": cap.entry_point,
            "msg_type": msg_type,
            "input": inp if isinstance(inp, Mapping) else unstructure(inp),
            "job_id": job_id,
            "cache_dir": str(self.cache_dir),
            "time_limit": cap.time_limit,
            "config": self.tables.get(msg_type, {}),
            "journal": str(journal) if journal else None,
            "attempt": attempt,
            "interrupted": interrupted,
            "memory_limit": memory_limit,
            "result": str(result),
            # A capability declared in the configuration ([[program]]): the job process
            # rebuilds it from its table.
            "program": _table_of(cap),
        }


def _table_of(cap: Capability) -> Any:
    program = getattr(cap.doer, "program", None)
    return None if program is None else program.table


def job_from_spec(
    spec: Mapping[str, Any], cap: Capability, environ: Mapping[str, str], notes: Notes
) -> Job:
    """The child side of :meth:`JobFactory.spec`: the job, its config structured from the
    table and its credentials from the environment the host handed over."""
    return Job(
        id=spec["job_id"],
        msg_type=cap.msg_type,
        cache_dir=Path(spec["cache_dir"]),
        time_limit=float(spec["time_limit"]),
        config=configuration.section_from_table(
            dict(spec.get("config") or {}), cap.config, cap.msg_type
        ),
        credentials=creds.from_env(cap.credentials, environ),
        env=dict(environ),
        notes=notes,
        attempt=int(spec.get("attempt", 1)),
        interrupted=bool(spec.get("interrupted", False)),
    )
