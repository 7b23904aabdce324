"""A capability as the host loads it, configures it and runs its jobs: in this process
(:func:`make_job`, :func:`call_doer`) or in a job process of its own
(:func:`start_job_process`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from opsagent.capability import Capability
from opsagent.credential import Credential
from opsagent.host import config as configuration
from opsagent.host import plugins
from opsagent.host.journal import Journal
from opsagent.isolation import execute
from opsagent.isolation.jobs import JobFactory
from opsagent.job import Job, Notes
from opsagent.outcome import Outcome


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
    jobs = _factory(capability, cache_dir, None, credentials, time_limit)
    jobs.configs[capability.msg_type] = config
    job = jobs.job(capability.msg_type, job_id, attempt=attempt, notes=notes)
    return job if env is None else attrs.evolve(job, env=dict(env))


def _factory(
    capability: Capability,
    cache_dir: Path,
    state_dir: Path | None,
    credentials: Mapping[str, Credential] | None,
    time_limit: float | None,
    env: Mapping[str, str] | None = None,
) -> JobFactory:
    """The host's job factory for ``capability`` alone: ``env`` (default: this process's
    environment, allow-listed as the host does) and the declared ``credentials``."""
    if time_limit is not None:
        capability = attrs.evolve(capability, time_limit=time_limit)
    msg_type = capability.msg_type
    given = {n: c for n, c in (credentials or {}).items() if n in capability.credentials}
    return JobFactory(
        {msg_type: capability},
        cache_dir=cache_dir,
        state_dir=state_dir,
        env_allow=configuration.ENV_ALLOW if env is None else list(env),
        credentials={msg_type: given},
        environ=env,
    )


def config_from_table(capability: Capability, table: Mapping[str, Any]) -> Any:
    """``capability``'s config object from a ``[capability.<msg_type>]`` table, structured
    and checked as the host does it at start-up (``None`` when it takes no configuration).

    Raises :class:`~opsagent.testing.ConfigError` naming each bad key
    (``capability.<msg_type>.<key>: ...``), or an unknown one.
    """
    return configuration.section_from_table(
        dict(table), capability.config, capability.msg_type, "<config_from_table>"
    )


def call_doer(capability: Capability, inp: Any, job: Job) -> Outcome:
    """Run the doer (its ``reconcile`` first when ``job.interrupted``) as the host calls
    it: what it raises becomes the job's :class:`~opsagent.Outcome` (``JobFailed``: an
    ``error`` with its reason; anything else: an ``error`` naming the exception)."""
    return execute.call(capability, inp, job)


def journal_notes(path: Path) -> Notes:
    """The durable notes of the host's journal at ``path`` (created if missing): what a job
    process started with :func:`start_job_process` remembered there, or notes for a job
    that must survive a killed process."""
    return Journal(path)


@attrs.define
class JobProcess:
    """A job running in a process of its own, as the host runs a ``process`` capability.

    The process leads a session of its own (so a process group, as the host starts it);
    its durable notes are in the journal at :attr:`journal`.
    """

    proc: subprocess.Popen[bytes]
    result: Path
    journal: Path
    job_id: str

    def kill9(self) -> None:
        """SIGKILL the job's whole process group: OOM, the host dying, systemd's last kill."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def outcome(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the job to end; its outcome as the host would publish it
        (``{"status": ..., "reason": ..., "data": {...}}``)."""
        self.proc.wait(timeout=timeout)
        out: dict[str, Any] = json.loads(self.result.read_text())
        return out

    def recall(self, key: str) -> str | None:
        """What the job remembered under ``key`` so far (``job.remember``)."""
        return journal_notes(self.journal).get_note(self.job_id, key)


#: Runs the host's job process with another interpreter (another user's, say) that sees
#: this one's packages: the site directories are the arguments.
_CHILD = (
    "import site, sys\n"
    "for d in sys.argv[1:]:\n"
    "    site.addsitedir(d)\n"
    "from opsagent.isolation.child import main\n"
    "sys.exit(main())\n"
)


def start_job_process(
    capability: Capability,
    inp: Any,
    *,
    cache_dir: Path,
    state_dir: Path,
    config: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Credential] | None = None,
    env: Mapping[str, str] | None = None,
    job_id: str = "job-0001",
    attempt: int = 1,
    interrupted: bool = False,
    time_limit: float | None = None,
    python: str | None = None,
    **popen: Any,
) -> JobProcess:
    """Start one job of ``capability`` (from :func:`declared`) in a job process of its own,
    the host's own (``process`` isolation): the plugin module imported afresh, ``inp``
    (a JSON object, or an input object) structured, ``config`` (a
    ``[capability.<msg_type>]`` table) checked, notes in a journal under ``state_dir``.

    The environment is ``env`` (default: the host's allow-listed variables of this
    process) plus ``SWF_TMP_DIR``, the host's process mark (``state_dir``) and the
    declared ``credentials``, handed over as the host hands them.  No time limit is
    enforced here: :meth:`JobProcess.kill9` is the test's.
    ``python`` runs the job with another interpreter (one that another user may run),
    given this one's site directories; ``popen`` goes to :class:`subprocess.Popen`
    (``user=``, ``group=``, ``umask=``, ``stderr=``...).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    result = state_dir / f"result-{job_id}-{attempt}.json"
    result.unlink(missing_ok=True)
    journal = state_dir / "journal.sqlite3"
    jobs = _factory(capability, cache_dir, state_dir, credentials, time_limit, env)
    jobs.tables[capability.msg_type] = dict(config or {})
    spec = jobs.spec(
        capability.msg_type,
        job_id,
        inp,
        result=result,
        journal=journal,
        attempt=attempt,
        interrupted=interrupted,
    )
    full_env = jobs.process_env(capability.msg_type, job_id)
    if python is None:
        argv = [sys.executable, "-m", "opsagent.isolation.child"]
    else:
        argv = [python, "-c", _CHILD, *(p for p in sys.path if p.endswith("site-packages"))]
    popen.setdefault("cwd", state_dir)
    proc = subprocess.Popen(  # noqa: S603 - a fixed argv
        argv, stdin=subprocess.PIPE, env=full_env, start_new_session=True, **popen
    )
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(json.dumps(spec).encode())
    proc.stdin = None  # sent and closed: ``communicate()`` has nothing more to send
    return JobProcess(proc, result, journal, job_id)


def installed(msg_type: str) -> Capability:
    """``msg_type`` as the host loads it at start-up from the installed distributions'
    entry points, with its ``distribution`` and ``version``: what ``pip install`` put in
    place.  Raises an error naming every broken plugin when it is not there."""
    registry = plugins.load(require=[msg_type])
    return registry.capabilities[msg_type]


def host_overrides(
    capability: Capability, table: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What the host sets over ``capability``'s declaration (``time_limit``,
    ``concurrency``...) from a ``[capability.<msg_type>]`` table and its environment."""
    config = configuration.Config(capability={capability.msg_type: dict(table or {})})
    return configuration.overrides(config, capability)
