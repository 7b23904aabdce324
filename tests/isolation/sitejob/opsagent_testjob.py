"""Capabilities that report the job they were given (tests/isolation/test_jobs.py): one
run in a job process, one in a host thread, each with a config class and a credential."""

from __future__ import annotations

import hashlib
import subprocess
import time

import attrs
from opsagent import Capability, Job, Outcome, hookimpl


@attrs.frozen
class Settings:
    label: str = "default"
    tries: int = 1


@attrs.frozen
class SeeInput:
    #: Seconds to wait before answering (past the time limit, for the timeout tests).
    seconds: float = 0.0
    #: Also start a program that would outlive a kill of the job process alone.
    grandchild: bool = False


def see(inp: SeeInput, job: Job) -> Outcome:
    if inp.grandchild:
        subprocess.Popen(["sleep", "600"], env=dict(job.env))  # noqa: S603, S607
    time.sleep(inp.seconds)
    secret = job.credential("seencred").read()
    return Outcome.ok(
        env=sorted(job.env),
        swf_tmp_dir=job.env.get("SWF_TMP_DIR"),
        mark=job.env.get("OPSAGENT_STATE_DIR"),
        cache_dir=str(job.cache_dir),
        time_limit=job.time_limit,
        config=attrs.asdict(job.config),
        credentials=sorted(job.credentials),
        cred_sha256=hashlib.sha256(secret.encode()).hexdigest(),
    )


@hookimpl
def register_capabilities(register):
    for msg_type, isolation in (("test_seen", "process"), ("test_seen_thread", "thread")):
        register(Capability(msg_type=msg_type, input=SeeInput, doer=see, config=Settings,
                            credentials=("seencred",), isolation=isolation, time_limit=30,
                            events={"ok": "test_seen_ok", "error": "test_seen_failed"}))
