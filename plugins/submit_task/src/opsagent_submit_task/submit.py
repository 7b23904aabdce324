"""The doer: catalogue -> prun in a private sandbox -> jediTaskID -> catalogue, never twice.

Never twice rests on what the job notes, durably, as it goes:

- the name PanDA will give the task (prun's ``--outDS``, see :mod:`.panda`), noted before
  prun starts, and the jediTaskID, noted the moment prun prints it -- prun's output is read
  as it comes, so a job killed while prun lingers has the id all the same;
- a job whose earlier attempt noted an id records that id instead of running prun again;
- a job whose earlier attempt started prun but noted no id (it was cut short: OOM, the
  host dying, a time limit) never submits blindly: it asks PanDA whether it has a task of
  that name (:func:`.panda.lookup`) and records its id, or, when PanDA cannot say, ends in
  ``error`` with "may have been submitted; check PanDA".  This is the capability's
  ``reconcile``, so the host notes every start before the doer runs;
- the catalogue: a task that already has a PanDA id is not submitted again;
- and behind these, prun's ``uniqueTaskName``: PanDA refuses a second task with the same
  name (``--allowTaskDuplication``, which turns it off, is refused by :mod:`.command`).

prun runs in a sandbox from :meth:`opsagent.Job.private_dir` -- never in the shared cache,
where a member of the operator's group could redirect it with a planted link: ``work/`` is
its working directory (what it uploads, kept empty), ``panda/`` the ``PANDA_CONFIG_ROOT``
holding the private token copy, and the sandbox itself ``HOME``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
from opsagent import Job, JobFailed, Outcome, run

from opsagent_submit_task import panda
from opsagent_submit_task import token as tokens
from opsagent_submit_task.catalogue import Catalogue, CatalogueError, record_with_retries
from opsagent_submit_task.command import CommandRefused, prun_argv
from opsagent_submit_task.config import SubmitConfig
from opsagent_submit_task.stopper import Stopper

#: The job note that holds the jediTaskID once prun has printed it.
NOTE_ID = "jedi_task_id"
#: The job note that holds the PanDA task name, noted before prun starts.
NOTE_PANDA_NAME = "panda_task_name"

_TASK_ID = re.compile(r"jediTaskID=(\d+)")
#: Inherited variables prun must not see: other credentials, and panda-client settings
#: that would bypass the private token copy (``PANDA_AUTH_ID_TOKEN``...).
_DROP_PREFIXES = ("OPSAGENT_CREDENTIAL_", "PANDA_", "OIDC_")
_DROP = frozenset({"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "X509_USER_PROXY", "CONDA_PREFIX"})
REASON_TAIL = 1500


@attrs.frozen
class Sandbox:
    """Where prun runs: ``root`` is its ``HOME``, ``work`` its working directory (kept
    empty: prun uploads it), ``config_root`` its ``PANDA_CONFIG_ROOT`` (the token copy)."""

    root: Path
    work: Path
    config_root: Path


@contextlib.contextmanager
def sandbox(job: Job, token: tokens.PandaToken) -> Iterator[Sandbox]:
    """A fresh private sandbox holding a copy of ``token``; removed, copy and all, after."""
    with contextlib.ExitStack() as stack:
        try:
            box = stack.enter_context(job.private_dir())
            work = box.mkdir("work")
            config_root = box.mkdir("panda")
            config_root.write(tokens.TOKEN_BASENAME, token.raw)
        except OSError as exc:
            raise JobFailed(f"cannot prepare a private sandbox for prun: {exc}") from None
        yield Sandbox(box.path, work.path, config_root.path)


def prun_env(job: Job, cfg: SubmitConfig, box: Sandbox) -> dict[str, str]:
    """The environment prun runs with: the job's allow-listed one, minus anything that
    could carry another credential or redirect panda-client, plus the site's
    ``panda_env`` and the settings this capability owns."""
    env = {k: v for k, v in job.env.items() if not k.startswith(_DROP_PREFIXES) and k not in _DROP}
    env.update(cfg.panda_env)
    bin_dir = os.path.join(cfg.panda_sys, "bin")
    env.update(
        {
            "PATH": bin_dir + os.pathsep + (job.env.get("PATH") or "/usr/bin:/bin"),
            "HOME": str(box.root),
            "PANDA_SYS": cfg.panda_sys,
            "VIRTUAL_ENV": cfg.panda_sys,
            "PANDA_AUTH": "oidc",
            "PANDA_AUTH_VO": cfg.vo,
            "PANDA_CONFIG_ROOT": str(box.config_root),
        }
    )
    return env


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


def _settings(job: Job) -> SubmitConfig:
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
    return cfg


def _token(job: Job, needed: float) -> tokens.PandaToken:
    try:
        token = tokens.load(job.credential("panda_oidc_token"))
        token.check(needed)
    except (tokens.TokenUnavailable, LookupError) as exc:
        raise JobFailed(f"submit_task is unavailable: {exc}") from None
    return token


def reconcile(inp: Any, job: Job) -> Outcome | None:
    """What an earlier attempt of this job left: its outcome, or ``None`` to submit.

    An id it noted is recorded.  A PanDA task name it noted without an id means prun ran
    and nobody saw how it ended: PanDA is asked, and its id recorded if it has the task;
    when it cannot say, the job ends in error and prun does not run again.
    """
    cfg = _settings(job)
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
    name = job.recall(NOTE_PANDA_NAME)
    if name is None:
        return None  # prun never started
    cut_short = (
        f"an earlier attempt of this job ran prun for {task} and was cut short before "
        f"PanDA's answer was seen, so {task} may have been submitted; check PanDA for a "
        f"task named {name!r} of the operator and record its id in the catalogue before "
        f"sending this request again"
    )
    try:
        token = _token(job, cfg.pcs_timeout)
    except JobFailed as exc:
        raise JobFailed(f"{cut_short}: PanDA could not be asked ({exc.reason})") from None
    with sandbox(job, token) as box:
        try:
            found = panda.lookup(
                name,
                python=cfg.python,
                env=prun_env(job, cfg, box),
                cwd=box.work,
                timeout=cfg.pcs_timeout,
            )
        except panda.LookupFailed as exc:
            why = _redact(str(exc), token.secrets)
            raise JobFailed(f"{cut_short}: PanDA could not be asked ({why})") from None
    if not found.ids:
        job.log.warning(
            "an earlier attempt of this job ran prun for {} and was cut short; PanDA has no "
            "task named {}: submitting it",
            task,
            name,
        )
        return None
    if len(found.ids) > 1:
        raise JobFailed(
            f"PanDA has {len(found.ids)} tasks named {name!r} "
            f"({', '.join(map(str, found.ids))}); record the right one in the catalogue "
            f"by hand"
        )
    (jedi_task_id,) = found.ids
    job.remember(NOTE_ID, str(jedi_task_id))
    job.log.warning(
        "an earlier attempt of this job was cut short after PanDA accepted {} as "
        "jediTaskID {}; recording that id instead of running prun again",
        task,
        jedi_task_id,
    )
    return record(pcs, task, jedi_task_id, cfg, job, resumed=True)


def submit(inp: Any, job: Job) -> Outcome:
    """Submit ``inp.task_name`` to PanDA with the operator's token and record its id."""
    cfg = _settings(job)
    task = inp.task_name
    pcs = _catalogue(inp, job, cfg)
    if not job.interrupted:  # an interrupted job was reconciled by the host already
        earlier = reconcile(inp, job)
        if earlier is not None:
            return earlier

    token = _token(job, cfg.prun_timeout + cfg.kill_grace)
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
    name = panda.task_name_of(argv)
    if name is None:
        raise JobFailed(f"the catalogue's command for {task} has no --outDS; nothing was run")
    prun = _find_prun(cfg)

    noted: list[int] = []

    def note_id(line: str) -> None:
        found = _TASK_ID.search(line)
        if found is not None and not noted:
            noted.append(int(found.group(1)))
            job.remember(NOTE_ID, found.group(1))  # before anything else can happen

    with sandbox(job, token) as box:
        job.remember(NOTE_PANDA_NAME, name)
        job.log.info("running prun for {} (PanDA task {})", task, name)
        stopper = Stopper()
        with stopper.installed():
            result = run(
                [prun, *argv[1:]],
                env=prun_env(job, cfg, box),
                cwd=box.work,
                timeout=cfg.prun_timeout,
                grace=cfg.kill_grace,
                output_cap=cfg.output_cap,
                on_line=note_id,
                on_start=stopper.started,
            )

    output = _redact(result.output, token.secrets)
    if noted:
        jedi_task_id = noted[0]
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
