"""The doer: catalogue -> prun in a sandbox -> jediTaskID -> catalogue, never twice.

Never twice rests on two checks made before prun runs: the job's own notes (a
redelivered job whose first attempt got an id records that id instead of submitting
again -- the id is noted the moment it is parsed, before the record is tried) and the
catalogue (a task that already has a PanDA id is not submitted again).  Behind both,
prun's ``uniqueTaskName`` makes PanDA refuse a second task with the same output name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opsagent import proc
from opsagent.job import Job
from opsagent.outcome import JobFailed, Outcome

from opsagent_submit_task import token as tokens
from opsagent_submit_task.catalogue import Catalogue, CatalogueError, record_with_retries
from opsagent_submit_task.command import CommandRefused, prun_argv
from opsagent_submit_task.config import SubmitConfig

#: The job note that holds the jediTaskID once prun has printed it.
NOTE_ID = "jedi_task_id"

_TASK_ID = re.compile(r"jediTaskID=(\d+)")
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: Inherited variables prun must not see: other credentials, and panda-client settings
#: that would bypass the private token copy (``PANDA_AUTH_ID_TOKEN``...).
_DROP_PREFIXES = ("OPSAGENT_CREDENTIAL_", "PANDA_", "OIDC_")
_DROP = frozenset({"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "X509_USER_PROXY", "CONDA_PREFIX"})
REASON_TAIL = 1500


def sandbox_of(job: Job) -> Path:
    """``<cache>/submit/<job id>``: ``work/`` is prun's working directory (what it
    uploads, kept empty), ``panda/`` the private ``PANDA_CONFIG_ROOT``.

    The job id is the caller's ``request_id`` -- any 128 characters, ``..`` included --
    and this directory is removed recursively, so an id that is not plain letters,
    digits, ``-`` and ``_`` is replaced by a digest of it.
    """
    name = job.id
    if not _PLAIN_ID.fullmatch(name):
        name = "job-" + hashlib.sha256(name.encode()).hexdigest()[:32]
    return Path(job.cache_dir) / "submit" / name


def prun_env(job: Job, cfg: SubmitConfig, root: Path, config_root: Path) -> dict[str, str]:
    """The environment prun runs with: the job's allow-listed one, minus anything that
    could carry another credential or redirect panda-client, plus the site's
    ``panda_env`` and the settings this capability owns."""
    env = {k: v for k, v in job.env.items() if not k.startswith(_DROP_PREFIXES) and k not in _DROP}
    env.update(cfg.panda_env)
    bin_dir = os.path.join(cfg.panda_sys, "bin")
    env.update(
        {
            "PATH": bin_dir + os.pathsep + (job.env.get("PATH") or "/usr/bin:/bin"),
            "HOME": str(root),
            "PANDA_SYS": cfg.panda_sys,
            "VIRTUAL_ENV": cfg.panda_sys,
            "PANDA_AUTH": "oidc",
            "PANDA_AUTH_VO": cfg.vo,
            "PANDA_CONFIG_ROOT": str(config_root),
        }
    )
    return env


class PrunStopper:
    """Takes prun down when this job is told to stop (SIGTERM, or SIGINT under ``opsagent do``).

    prun runs in a session of its own (so that its own limit kills everything it started),
    which a signal to the job's process group -- the host stopping the job -- does not
    reach: without this, prun would go on submitting with nobody to note its id.  The
    handler kills prun's group at once; the doer then still notes any id prun printed.
    Only the main thread may install handlers; elsewhere this is a no-op.
    """

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.stopped = False

    def started(self, pid: int) -> None:
        self.pgid = pid  # proc.run makes prun the leader of a new group
        if self.stopped:
            self._kill()

    def _kill(self) -> None:
        if self.pgid is not None:
            proc.kill_group(self.pgid, signal.SIGKILL)

    def _handler(self, _signum: int, _frame: object) -> None:
        self.stopped = True
        self._kill()

    @contextlib.contextmanager
    def installed(self) -> Iterator[PrunStopper]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {
            sig: signal.signal(sig, self._handler) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _find_prun(cfg: SubmitConfig) -> str:
    if os.access(cfg.prun, os.X_OK):
        return cfg.prun
    raise JobFailed(
        f"prun not found at {cfg.prun}: set panda_sys in [capability.submit_task] "
        f"(or PANDA_SYS) to the environment panda-client is installed in"
    )


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def _tail(text: str) -> str:
    text = text.strip()
    if len(text) <= REASON_TAIL:
        return text or "(no output)"
    return "..." + text[-REASON_TAIL:]


def _catalogue(inp: Any, job: Job, cfg: SubmitConfig) -> Catalogue:
    pcs_token = job.credentials.get("pcs_token")
    return Catalogue(
        cfg.monitor_url,
        cfg.pcs_timeout,
        owner=inp.owner,
        token=pcs_token.read() if pcs_token is not None else None,
        verify=cfg.ca_bundle or True,
    )


def record(
    pcs: Catalogue, task_name: str, jedi_task_id: int, cfg: SubmitConfig, job: Job, **data: Any
) -> Outcome:
    """Record the id with retries; ``ok`` or, when every try failed, ``unrecorded``."""
    failures = record_with_retries(
        lambda: pcs.record(task_name, jedi_task_id),
        cfg.backoffs(),
        log=lambda line: job.log.warning(line),
    )
    data = {"jedi_task_id": str(jedi_task_id), **data}
    if not failures:
        job.log.info("recorded jediTaskID {} for {}", jedi_task_id, task_name)
        return Outcome.ok(**data)
    tries = f"{len(failures)} tr{'y' if len(failures) == 1 else 'ies'}"
    again = (
        f"POST {cfg.monitor_url}/pcs/api/prod-tasks/record-submission/"
        f'?name={quote(task_name, safe="")} with {{"jedi_task_id": {jedi_task_id}}}'
    )
    return Outcome.unrecorded(
        f"PanDA task {jedi_task_id} WAS submitted for {task_name}, but the catalogue did not "
        f"record it ({tries}; last: {failures[-1]}); record it by hand: {again} "
        f"(the endpoint is idempotent for this id)",
        **data,
    )


def submit(inp: Any, job: Job) -> Outcome:
    """Submit ``inp.task_name`` to PanDA with the operator's token and record its id."""
    cfg: SubmitConfig = job.config if job.config is not None else SubmitConfig()
    try:
        cfg.check_time_limit(job.time_limit)
    except ValueError as exc:
        raise JobFailed(f"submit_task is misconfigured: {exc}") from None
    if not cfg.monitor_url:
        raise JobFailed(
            "the catalogue's address is not configured: set monitor_url in "
            "[capability.submit_task] or SWF_MONITOR_HTTP_URL"
        )
    task = inp.task_name
    pcs = _catalogue(inp, job, cfg)

    stored = job.recall(NOTE_ID)
    if stored is not None:
        job.log.warning(
            "an earlier attempt of this job submitted {} as jediTaskID {}; "
            "recording that id instead of running prun again",
            task,
            stored,
        )
        return record(pcs, task, int(stored), cfg, job, resumed=True)

    try:
        token = tokens.load(job.credential("panda_oidc_token"))
        token.check(cfg.prun_timeout + cfg.kill_grace)
    except (tokens.TokenUnavailable, LookupError) as exc:
        raise JobFailed(f"submit_task is unavailable: {exc}") from None

    try:
        existing = pcs.panda_task_id(task)
    except CatalogueError as exc:
        raise JobFailed(f"{exc}; nothing was submitted") from None
    if existing is not None:
        job.log.info(
            "{} already has jediTaskID {} in the catalogue; not submitting", task, existing
        )
        return Outcome.ok(jedi_task_id=str(existing), already_submitted=True)

    try:
        argv = prun_argv(pcs.command(task))
    except CatalogueError as exc:
        raise JobFailed(f"{exc}; nothing was submitted") from None
    except CommandRefused as exc:
        raise JobFailed(
            f"refused the catalogue's command for {task}: {exc}; nothing was run"
        ) from None
    prun = _find_prun(cfg)

    root = sandbox_of(job)
    try:
        # A sandbox left by an attempt that was killed goes first: it must be fresh.
        shutil.rmtree(root, ignore_errors=True)
        work, config_root = root / "work", root / "panda"
        try:
            work.mkdir(mode=0o700, parents=True)
            os.chmod(root, 0o700)
            token.install(config_root)
        except OSError as exc:
            raise JobFailed(f"cannot prepare the sandbox {root}: {exc.strerror}") from None
        job.log.info("running prun for {} in {}", task, work)
        stopper = PrunStopper()
        with stopper.installed():
            result = proc.run(
                [prun, *argv[1:]],
                env=prun_env(job, cfg, root, config_root),
                cwd=work,
                timeout=cfg.prun_timeout,
                grace=cfg.kill_grace,
                output_cap=cfg.output_cap,
                on_start=stopper.started,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    output = _redact(result.output, token.secrets)
    found = _TASK_ID.search(output)
    if found is not None:
        jedi_task_id = int(found.group(1))
        job.remember(NOTE_ID, str(jedi_task_id))
        job.log.info(
            "PanDA accepted {} as jediTaskID {} (prun {} in {:.1f} s)",
            task,
            jedi_task_id,
            "exit 0" if result.ok else f"status {result.returncode}",
            result.duration,
        )
        return record(pcs, task, jedi_task_id, cfg, job)
    if stopper.stopped:
        raise JobFailed(
            f"the job was stopped while prun ran; prun and everything it started were "
            f"killed. No jediTaskID was printed, but PanDA may have received the task: look "
            f"it up before submitting {task} again. prun said: {_tail(output)}"
        )
    if result.timed_out:
        return Outcome.timeout(
            f"prun did not finish within {cfg.prun_timeout:g} s; it and everything it started "
            f"were killed. No jediTaskID was printed, but PanDA may have received the task: "
            f"look it up before submitting {task} again. prun said: {_tail(output)}"
        )
    if result.returncode != 0:
        raise JobFailed(
            f"prun failed with exit status {result.returncode} and printed no "
            f"jediTaskID: {_tail(output)}"
        )
    raise JobFailed(
        f"prun exited 0 but printed no jediTaskID, so nothing is recorded: {_tail(output)}"
    )
