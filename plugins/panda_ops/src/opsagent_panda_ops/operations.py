"""The doers of ``panda_task_operation`` (one task) and ``panda_task_operations`` (a batch).

Both run the same way: the operator's token is read and checked before anything is
called; the monitor is told each operation is ``running``; the commands go to PanDA
through panda-client (:mod:`.client`), paced one a second, and every answer is noted
durably the moment it arrives (``Job.remember``); a pause or resume is read back until
the task shows the wanted status; then each operation's final state goes to the
monitor and the job ends with one outcome per item.

Everything is bounded by the operation's budget (the job's time limit less the
backstop): panda-client is killed at the deadline with all it started, an item whose
command was never sent ends ``timeout``, and the backstop leaves time to tell the
monitor.  A job cut short (the host stopped, killed) is reconciled when its request
comes back: what its notes say was answered keeps that answer, and nothing is sent
twice; the items never reached end ``timeout``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
from opsagent import Job, JobFailed, Outcome, run
from opsagent_submit_task import token as tokens

from opsagent_panda_ops import client
from opsagent_panda_ops.config import PandaConfig
from opsagent_panda_ops.monitor import Monitor

#: The outcome status of each item -> the state the monitor is told.
STATE_OF = {
    "verified": "verified",
    "done": "accepted",
    "unverified": "unverified",
    "failed": "failed",
    "timeout": "timeout",
}
_DROP_PREFIXES = ("OPSAGENT_CREDENTIAL_", "PANDA_", "OIDC_")
_DROP = frozenset({"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "X509_USER_PROXY", "CONDA_PREFIX"})


@attrs.frozen
class Item:
    """One task command: ``key`` names it in the job's notes (unique in the job)."""

    key: str
    task_id: int
    task_name: str | None = None
    operation_id: str | None = None
    increase: int = 1
    new_parameters: dict[str, Any] | None = None


@attrs.frozen
class Result:
    """How one command ended: ``status`` is one of verified, done, unverified, failed,
    timeout (the event's ``status``)."""

    status: str
    diagnostic: str
    observed_status: str | None = None
    status_diagnostic: str = ""

    @property
    def accepted(self) -> bool:
        return self.status in ("verified", "done", "unverified")


# -- the run -------------------------------------------------------------------------


def settings(job: Job) -> PandaConfig:
    cfg: PandaConfig = job.config if job.config is not None else PandaConfig()
    try:
        cfg.check_time_limit(job.time_limit)
    except ValueError as exc:
        raise JobFailed(f"{job.msg_type} is misconfigured: {exc}") from None
    if not cfg.monitor_url:
        raise JobFailed(
            f"the monitor's address is not configured: set monitor_url in "
            f"[capability.{job.msg_type}] or SWF_MONITOR_HTTP_URL"
        )
    return cfg


def load_token(
    job: Job, needed: float, nothing_done: str = "nothing was sent to PanDA"
) -> tokens.PandaToken:
    """The operator's token, valid for ``needed`` more seconds, or :class:`JobFailed`
    saying ``nothing_done`` and why."""
    try:
        token = tokens.load(job.credential("panda_oidc_token"))
        token.check(needed)
    except (tokens.TokenUnavailable, LookupError) as exc:
        raise JobFailed(f"{nothing_done}: {exc}") from None
    return token


def monitor_of(job: Job, cfg: PandaConfig) -> Monitor:
    cred = job.credentials.get("monitor_token")
    return Monitor(
        cfg.monitor_url,
        cred.read() if cred is not None else None,
        cfg.monitor_timeout,
        cfg.link_base,
        verify=cfg.ca_bundle or True,
        log=lambda line: job.log.warning(line),
    )


class PandaSettings(Protocol):
    """What :func:`runner_env` reads of a capability's configuration."""

    panda_env: dict[str, str]
    panda_sys: str
    vo: str


def runner_env(job: Job, cfg: PandaSettings, home: Path, config_root: Path) -> dict[str, str]:
    """panda-client's environment: the job's, minus other credentials and anything that
    would bypass the private token copy, plus the site's ``panda_env``."""
    env = {k: v for k, v in job.env.items() if not k.startswith(_DROP_PREFIXES) and k not in _DROP}
    env.update(cfg.panda_env)
    env.update(
        {
            "PATH": os.path.join(cfg.panda_sys, "bin")
            + os.pathsep
            + (job.env.get("PATH") or "/usr/bin:/bin"),
            "HOME": str(home),
            "PANDA_SYS": cfg.panda_sys,
            "PANDA_AUTH": "oidc",
            "PANDA_AUTH_VO": cfg.vo,
            "PANDA_CONFIG_ROOT": str(config_root),
        }
    )
    return env


@contextmanager
def sandbox(job: Job, token: tokens.PandaToken) -> Iterator[tuple[Path, Path]]:
    """A fresh private directory (``HOME``) with ``panda/.token``, the token's copy."""
    try:
        with job.private_dir() as box:
            config_root = box.mkdir("panda")
            config_root.write(tokens.TOKEN_BASENAME, token.raw)
            yield box.path, config_root.path
    except OSError as exc:
        raise JobFailed(f"cannot prepare a private directory for panda-client: {exc}") from None


def _note_key(key: str) -> str:
    return f"panda-op:{key}"


@attrs.define
class _Seen:
    """What the runner has said about one item so far."""

    sent: client.Sent | None = None
    observed: str | None = None
    read_diagnostic: str = ""
    #: The command went out (it may have reached PanDA even without an answer).
    sending: bool = False

    @property
    def reached(self) -> bool:
        return self.sending or self.sent is not None

    def to_json(self) -> str:
        sent = None if self.sent is None else attrs.asdict(self.sent)
        return json.dumps(
            {
                "sending": self.sending,
                "sent": sent,
                "observed": self.observed,
                "read": self.read_diagnostic,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> _Seen:
        doc = json.loads(raw)
        sent = doc.get("sent")
        return cls(
            None if sent is None else client.Sent(bool(sent["accepted"]), str(sent["diagnostic"])),
            doc.get("observed"),
            str(doc.get("read") or ""),
            bool(doc.get("sending")),
        )


def send(
    operation: str,
    items: Sequence[Item],
    job: Job,
    cfg: PandaConfig,
    token: tokens.PandaToken,
    deadline: float,
    earlier: dict[str, _Seen] | None = None,
) -> tuple[dict[str, _Seen], str]:
    """Send the commands and read back their effect, until done or ``deadline``.

    With ``earlier`` (what a job cut short noted) nothing is sent: only the effect is
    read back.  Returns what was seen of each item (noted as it came) and how the runner
    ended.
    """
    seen: dict[str, _Seen] = {item.key: _Seen() for item in items}
    seen.update(earlier or {})
    by_key = {item.key: item for item in items}

    def on_line(line: str) -> None:
        answer = client.parse(line)
        if answer is None or answer.get("key") not in by_key:
            return
        state = seen[answer["key"]]
        if answer["kind"] == "sending":
            state.sending = True
        elif answer["kind"] == "sent" and state.sent is None:
            judged = client.judge_sent(operation, answer.get("status"), answer.get("output"))
            state.sent = client.Sent(judged.accepted, _redact(judged.diagnostic, token))
        elif answer["kind"] == "read":
            observed, why = client.judge_status(answer.get("status"), answer.get("output"))
            if observed is not None:
                state.observed = observed
            state.read_diagnostic = _redact(why, token)
        else:
            return
        job.remember(_note_key(answer["key"]), state.to_json())  # before anything else

    request = {
        "operation": operation,
        "items": [
            {
                "key": item.key,
                "task_id": item.task_id,
                "increase": item.increase,
                "new_parameters": item.new_parameters,
            }
            for item in items
        ],
        "commands": earlier is None,
        "interval": cfg.send_interval,
        "verify_seconds": cfg.verify_seconds,
        "verify_every": cfg.verify_every,
        "wanted": client.WANTED.get(operation, []),
    }
    left = deadline - time.monotonic()
    if left <= 0:
        return seen, "the operation's budget was spent before PanDA was called"
    if not os.access(cfg.python, os.X_OK):
        raise JobFailed(
            f"no Python at {cfg.python} to run panda-client with: set panda_sys in "
            f"[capability.{job.msg_type}] (or PANDA_SYS)"
        )
    with sandbox(job, token) as (home, config_root):
        done = run(
            [cfg.python, "-c", client.RUNNER, str(os.getpid())],
            env=runner_env(job, cfg, home, config_root),
            cwd=home,
            timeout=left,
            grace=cfg.kill_grace,
            output_cap=64 * 1024,
            stdin_data=json.dumps(request).encode(),
            on_line=on_line,
        )
    if done.timed_out:
        how = "timed out"
    elif done.returncode != 0:
        how = f"panda-client failed (status {done.returncode}): " + _redact(done.tail(400), token)
    else:
        how = "ended"
    return seen, how


def _redact(text: str, token: tokens.PandaToken) -> str:
    for secret in token.secrets:
        text = text.replace(secret, "<redacted>")
    return text


def result_of(operation: str, state: _Seen | None, how: str, budget: float) -> Result:
    """The end of one item from what was seen of it."""
    timed_out = how == "timed out" or how.startswith("the operation's budget")
    if state is not None and state.sent is None and state.sending and timed_out:
        # PanDA did not answer within the budget (LEGACY: the same timeout).
        return Result("timeout", f"operation timed out after {budget:g}s")
    if state is not None and state.sent is None and state.sending:
        # Out, but its answer never seen (the job was cut short): PanDA may have it;
        # never sent again.
        sent = client.Sent(True, "sent; PanDA's answer was not seen")
        if operation not in client.STATE_CHANGES or state.observed not in client.WANTED[operation]:
            why = (
                f"the read-back shows {state.observed}"
                if state.observed is not None
                else "its effect is unknown"
            )
            return Result(
                "unverified",
                f"the {operation} was sent but PanDA's answer was not seen ({how}); {why}: "
                f"check the task before sending it again",
                state.observed,
                state.read_diagnostic,
            )
        state = attrs.evolve(state, sent=sent)
    if state is None or state.sent is None:
        if timed_out:
            return Result("timeout", f"operation timed out after {budget:g}s")
        return Result("failed", f"no answer from PanDA for this task: {how}")
    if not state.sent.accepted:
        return Result("failed", state.sent.diagnostic, state.observed, state.read_diagnostic)
    if operation not in client.STATE_CHANGES:
        return Result("done", state.sent.diagnostic)
    wanted = client.WANTED[operation]
    if state.observed in wanted:
        return Result(
            "verified",
            f"PanDA accepted the {operation} ({state.sent.diagnostic}); the task is now "
            f"{state.observed}",
            state.observed,
            state.read_diagnostic,
        )
    if state.observed is not None:
        why = f"its status is still {state.observed}"
    elif state.read_diagnostic:
        why = state.read_diagnostic
    else:
        why = "its status was not read back before the time limit"
    return Result(
        "unverified",
        f"PanDA accepted the {operation} ({state.sent.diagnostic}) but {why}",
        state.observed,
        state.read_diagnostic,
    )


def recalled(job: Job, items: Sequence[Item]) -> dict[str, _Seen]:
    """What an earlier attempt of this job noted, per item key (absent: nothing)."""
    out = {}
    for item in items:
        raw = job.recall(_note_key(item.key))
        if raw is not None:
            try:
                out[item.key] = _Seen.from_json(raw)
            except (ValueError, KeyError, TypeError):
                out[item.key] = _Seen(
                    client.Sent(False, "the job's note of this task is unreadable")
                )
    return out


def look_again(
    operation: str, items: Sequence[Item], noted: dict[str, _Seen], job: Job, cfg: PandaConfig
) -> tuple[dict[str, _Seen], str]:
    """For a job cut short: read back the status of each item whose command went out
    (a pause or resume), nothing sent; returns what was noted, updated, and how it went."""
    reached = [i for i in items if i.key in noted and noted[i.key].reached]
    if operation not in client.STATE_CHANGES or not reached:
        return noted, "interrupted"
    budget = cfg.budget(job.time_limit)
    try:
        token = load_token(job, budget)
    except JobFailed as exc:
        return noted, f"interrupted; the status could not be read back: {exc.reason}"
    seen, how = send(
        operation,
        reached,
        job,
        cfg,
        token,
        time.monotonic() + budget,
        earlier={i.key: noted[i.key] for i in reached},
    )
    return {**noted, **seen}, f"interrupted, read back: {how}"


def outcome_of(result: Result, **data: Any) -> Outcome:
    """The event's outcome of one item (``panda_task_operation_done``)."""
    fields: dict[str, Any] = {"status": result.status, **data}
    if result.observed_status is not None:
        fields["observed_status"] = result.observed_status
    if result.status == "verified":
        return Outcome.ok(accepted=True, summary=result.diagnostic, **fields)
    if result.status == "done":
        return Outcome.ok(accepted=True, summary=result.diagnostic, **fields)
    if result.status == "unverified":
        return Outcome.unverified(result.diagnostic, accepted=True, **fields)
    if result.status == "timeout":
        return Outcome.timeout(result.diagnostic, accepted=False, **fields)
    return Outcome.error(result.diagnostic, accepted=False, **fields)


def evidence(item: Item, result: Result, job: Job, **extra: Any) -> dict[str, Any]:
    out = {
        "jedi_task_id": item.task_id,
        "job_id": job.id,
        "panda_answer": result.diagnostic,
        **extra,
    }
    if result.status_diagnostic:
        out["status_diagnostic"] = result.status_diagnostic
    return out
