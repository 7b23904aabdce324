"""``submit_evgen_task``: the catalogue's Submit button (LEGACY.md, Other handlers 1).

catalogue EVGEN spec -> a private sandbox (manifest, environment script, dispatcher,
the JLab ``eicprod`` proxy) -> panda-client uploads it and submits the task
(``Client.putFile``, ``Client.insertTaskParams``) under the operator's token -> the
jediTaskID is recorded in the catalogue (``record-submission/``, retried), or the
failure is (``record-submission-failure/``) when no id exists.

Never twice, as ``submit_task``: the PanDA task name is noted before the task goes out
and the jediTaskID the moment PanDA answers; a job cut short records a noted id, asks
PanDA about a noted name (the operator's tasks of that name), and never submits
blindly.  The dedup key space is ``submit:<task_name>``, shared with ``submit_task``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import attrs
from opsagent import Job, JobFailed, Outcome, doubling, http_url, positive, run
from opsagent_submit_task import panda as panda_lookup
from opsagent_submit_task import token as tokens
from opsagent_submit_task.catalogue import Catalogue, CatalogueError, record_with_retries

from opsagent_panda_ops import evgen_spec
from opsagent_panda_ops import operations as ops
from opsagent_panda_ops.client import PRELUDE
from opsagent_panda_ops.config import _panda_env, _strip

NOTE_ID = "jedi_task_id"
#: What a job that could not use the token says it did.
NOTHING_DONE = "nothing was submitted"
NOTE_PANDA_NAME = "panda_task_name"
MARK = "OPSAGENT-EVGEN "
DEFAULT_TIME_LIMIT = 300.0
SETUP_SECONDS = 5.0
_TASK_ID = re.compile(r"jediTaskID=(\d+)")

RUNNER = (
    PRELUDE
    + f"""
import json, os, re, sys, tarfile, uuid
from pandaclient import Client

MARK = {MARK!r}
req = json.load(sys.stdin)


def say(**fields):
    print(MARK + json.dumps(fields, default=str), flush=True)


name = "jobO." + uuid.uuid4().hex + ".tar.gz"
with tarfile.open(name, "w:gz") as tar:
    for root, dirs, files in os.walk(req["sandbox"]):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            path = os.path.join(root, f)
            tar.add(path, arcname=os.path.relpath(path, req["sandbox"]))
status, out = Client.putFile(name, False, useCacheSrv=False, reuseSandbox=True)
out = str(out)
if out.startswith("NewFileName:"):
    name = out.split(":")[-1]
elif status != 0 or out != "True":
    say(kind="upload_failed", status=status, output=out)
    sys.exit(0)
params = req["params"]
for p in params["jobParameters"]:
    if p.get("value") == "-a " + req["archive_mark"]:
        p["value"] = "-a " + name
m = re.search(r"(https?://[^/]+)/", getattr(Client, "baseURLSSL", ""))
params["sourceURL"] = m.group(1) if m else None
say(kind="submitting", task_name=params["taskName"])
status, out = Client.insertTaskParams(params)
say(kind="submitted", status=status, output=out)
"""
)


@attrs.frozen
class EvgenConfig:
    """``[capability.submit_evgen_task]``; every key has a default but ``dispatcher``."""

    monitor_url: str = attrs.field(
        factory=lambda: os.environ.get("SWF_MONITOR_HTTP_URL", "").rstrip("/"),
        converter=_strip,
        validator=http_url,
    )
    ca_bundle: str | None = None
    vo: str = "EIC.production"
    panda_sys: str = attrs.field(
        factory=lambda: os.environ.get("PANDA_SYS") or __import__("sys").prefix
    )
    panda_env: dict[str, str] = attrs.field(factory=dict, validator=_panda_env)
    #: The in-job dispatcher shipped in the sandbox (``evgen_job_dispatcher.py``).
    dispatcher: str = ""
    pcs_timeout: float = attrs.field(default=15.0, validator=positive)
    #: Upload and submission together; then panda-client and all it started are killed.
    submit_timeout: float = attrs.field(default=180.0, validator=positive)
    kill_grace: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    record_tries: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    record_backoff: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))

    def backoffs(self) -> list[float]:
        return doubling(self.record_backoff, self.record_tries)

    def budget(self) -> list[tuple[str, float]]:
        return [
            ("catalogue spec", self.pcs_timeout),
            ("PanDA look-up", self.pcs_timeout),
            ("upload and submission", self.submit_timeout),
            ("kill grace", self.kill_grace),
            (f"{self.record_tries} record tries", self.record_tries * self.pcs_timeout),
            ("record backoff", sum(self.backoffs())),
            ("set-up", SETUP_SECONDS),
        ]

    def check_time_limit(self, time_limit: float) -> None:
        total = sum(s for _, s in self.budget())
        if time_limit <= total:
            detail = " + ".join(f"{label} {s:g} s" for label, s in self.budget())
            raise ValueError(
                f"time limit {time_limit:g} s is not longer than the inner budgets ({detail} "
                f"= {total:g} s); raise time_limit or lower submit_timeout or pcs_timeout"
            )

    @property
    def python(self) -> str:
        return os.path.join(self.panda_sys, "bin", "python")


def _settings(job: Job) -> EvgenConfig:
    cfg: EvgenConfig = job.config if job.config is not None else EvgenConfig()
    try:
        cfg.check_time_limit(job.time_limit)
    except ValueError as exc:
        raise JobFailed(f"submit_evgen_task is misconfigured: {exc}") from None
    if not cfg.monitor_url:
        raise JobFailed("the catalogue's address is not configured: set monitor_url")
    return cfg


def _catalogue(inp: Any, job: Job, cfg: EvgenConfig) -> Catalogue:
    cred = job.credentials.get("pcs_token")
    return Catalogue(
        cfg.monitor_url,
        cfg.pcs_timeout,
        owner=inp.owner,
        token=cred.read() if cred is not None else None,
        verify=cfg.ca_bundle or True,
    )


def _record(
    pcs: Catalogue,
    inp: Any,
    jedi_task_id: int,
    cfg: EvgenConfig,
    job: Job,
    extra: dict[str, Any],
    **data: Any,
) -> Outcome:
    body = dict(extra)
    if inp.panda_tasks_id:
        body["panda_tasks_id"] = inp.panda_tasks_id
    failures = record_with_retries(
        lambda: pcs.record(inp.task_name, jedi_task_id, body),
        cfg.backoffs(),
        log=lambda line: job.log.warning(line),
    )
    data = {"jedi_task_id": str(jedi_task_id), **data}
    if not failures:
        return Outcome.ok(**data)
    return Outcome.unrecorded(
        f"PanDA task {jedi_task_id} WAS submitted for {inp.task_name}, but the catalogue did "
        f"not record it ({len(failures)} tries; last: {failures[-1]}); record it by hand with "
        f"POST {cfg.monitor_url}/pcs/api/prod-tasks/record-submission/ (idempotent for this id)",
        **data,
    )


def _failed(pcs: Catalogue, inp: Any, reason: str, job: Job) -> JobFailed:
    """The job's failure before an id exists, told to the catalogue when it gave an id."""
    if inp.panda_tasks_id:
        try:
            pcs.record_failure(inp.task_name, inp.panda_tasks_id, reason)
        except CatalogueError as exc:
            job.log.warning("could not record the failure in the catalogue: {}", exc)
    return JobFailed(reason)


def reconcile(inp: Any, job: Job) -> Outcome | None:
    """What an earlier attempt left: a noted id is recorded; a noted PanDA task name is
    looked up in PanDA; ``None`` when nothing went out."""
    cfg = _settings(job)
    pcs = _catalogue(inp, job, cfg)
    stored = job.recall(NOTE_ID)
    name = job.recall(NOTE_PANDA_NAME)
    extra = {"panda_task_name": name} if name else {}
    if stored is not None:
        return _record(pcs, inp, int(stored), cfg, job, extra, resumed=True)
    if name is None:
        return None
    token = ops.load_token(job, cfg.pcs_timeout, NOTHING_DONE)
    with job.private_dir() as box:
        config_root = box.mkdir("panda")
        config_root.write(tokens.TOKEN_BASENAME, token.raw)
        try:
            found = panda_lookup.lookup(
                name,
                python=cfg.python,
                env=ops.runner_env(job, cfg, box.path, config_root.path),
                cwd=box.path,
                timeout=cfg.pcs_timeout,
            )
        except panda_lookup.LookupFailed as exc:
            raise JobFailed(
                f"an earlier attempt submitted {name!r} to PanDA and was cut short before its "
                f"answer was seen; PanDA could not be asked ({exc}): check PanDA and record "
                f"the id before sending this request again"
            ) from None
    if not found.ids:
        return None
    if len(found.ids) > 1:
        raise JobFailed(f"PanDA has {len(found.ids)} tasks named {name!r}: record one by hand")
    job.remember(NOTE_ID, str(found.ids[0]))
    return _record(pcs, inp, found.ids[0], cfg, job, extra, resumed=True)


def submit(inp: Any, job: Job) -> Outcome:
    """Submit ``inp.task_name``'s EVGEN task to PanDA and record its id."""
    started = time.monotonic()
    cfg = _settings(job)
    pcs = _catalogue(inp, job, cfg)
    if not job.interrupted:
        earlier = reconcile(inp, job)
        if earlier is not None:
            return earlier
    try:
        token = ops.load_token(job, cfg.submit_timeout + cfg.kill_grace, NOTHING_DONE)
        proxy = job.credential("evgen_x509_proxy")
    except (JobFailed, LookupError) as exc:
        raise _failed(pcs, inp, str(getattr(exc, "reason", exc)), job) from None
    if proxy.path is None or not os.path.isfile(proxy.path):
        raise _failed(pcs, inp, "the JLab x509 proxy (evgen_x509_proxy) is not a file", job)
    if not cfg.dispatcher or not os.path.isfile(cfg.dispatcher):
        raise _failed(
            pcs,
            inp,
            f"the in-job dispatcher is not configured or missing: {cfg.dispatcher!r}",
            job,
        )
    try:
        spec = evgen_spec.check(pcs.evgen_spec(inp.task_name, inp.panda_tasks_id))
        params = evgen_spec.task_params(spec, inp.owner)
    except (CatalogueError, evgen_spec.SpecRefused) as exc:
        raise _failed(pcs, inp, f"{exc}; nothing was submitted", job) from None
    proxy_name = "x509_eicprod"
    noted: list[int] = []
    answer: dict[str, Any] = {}

    def on_line(line: str) -> None:
        if not line.startswith(MARK):
            return
        try:
            said = json.loads(line[len(MARK) :])
        except ValueError:
            return
        if not isinstance(said, dict):
            return
        if said.get("kind") == "submitting":
            job.remember(NOTE_PANDA_NAME, params["taskName"])
        elif said.get("kind") in ("submitted", "upload_failed"):
            answer.update(said)
            out = said.get("output")
            if (
                said.get("kind") == "submitted"
                and said.get("status") == 0
                and (isinstance(out, list) and len(out) == 2 and out[0] == 0)
            ):
                found = _TASK_ID.search(str(out[1]))
                if found and not noted:
                    noted.append(int(found.group(1)))
                    job.remember(NOTE_ID, found.group(1))  # before anything else

    with job.private_dir() as box:
        config_root = box.mkdir("panda")
        config_root.write(tokens.TOKEN_BASENAME, token.raw)
        sandbox = box.mkdir("sandbox")
        base = spec["csvBase"]
        sandbox.write(f"{base}.csv", evgen_spec.manifest(spec).encode())
        sandbox.write(
            f"environment-{base}.sh", evgen_spec.environment_script(spec, proxy_name).encode()
        )
        sandbox.write("evgen_job_dispatcher.py", Path(cfg.dispatcher).read_bytes())
        sandbox.write(proxy_name, Path(proxy.path).read_bytes())
        work = box.mkdir("work")
        left = cfg.submit_timeout - max(0.0, time.monotonic() - started - cfg.pcs_timeout)
        done = run(
            [cfg.python, "-c", RUNNER, str(os.getpid())],
            env=ops.runner_env(job, cfg, box.path, config_root.path),
            cwd=work.path,
            timeout=max(1.0, min(cfg.submit_timeout, left)),
            grace=cfg.kill_grace,
            stdin_data=json.dumps(
                {
                    "sandbox": str(sandbox.path),
                    "params": params,
                    "archive_mark": evgen_spec.ARCHIVE_MARK,
                }
            ).encode(),
            on_line=on_line,
        )
    extra = {"panda_task_name": params["taskName"], "manifest_rows": spec["csvRows"]}
    if noted:
        return _record(pcs, inp, noted[0], cfg, job, extra)
    if done.timed_out:
        reason = f"submission timed out after {cfg.submit_timeout:g}s"
        if job.recall(NOTE_PANDA_NAME):
            reason += f"; PanDA may have task {params['taskName']!r}: look it up first"
        raise _failed(pcs, inp, reason, job)
    if answer.get("kind") == "upload_failed":
        reason = (
            f"the sandbox upload failed (status {answer.get('status')}): {answer.get('output')}"
        )
    elif answer.get("kind") == "submitted":
        out = answer.get("output")
        reason = f"PanDA refused the task (status {answer.get('status')}): {str(out)[:500]}"
    else:
        reason = f"panda-client ended without an answer (exit {done.returncode}): {done.tail(500)}"
    for secret in token.secrets:
        reason = reason.replace(secret, "<redacted>")
    raise _failed(pcs, inp, reason, job)
