"""Thread capabilities for in-process hosts (the testing Harness) in the operations tests."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import attrs
from opsagent import Capability, Digits, Job, JobFailed, Outcome, hookimpl


@attrs.frozen
class WorkInput:
    seconds: float = 0.0
    fail: bool = False


def work(inp: WorkInput, job: Job) -> Outcome:
    time.sleep(inp.seconds)
    if inp.fail:
        raise JobFailed("asked to fail")
    return Outcome.ok()


@attrs.frozen
class FetchInput:
    pandaid: Digits
    jeditaskid: Digits
    seconds: float = 0.0
    requested_by: str | None = None


def fetch(inp: FetchInput, job: Job) -> Outcome:
    time.sleep(inp.seconds)
    return Outcome.ok()


def handed_over(inp: WorkInput, job: Job) -> Outcome:
    """Which credentials this job was handed (names only), as a process job sees them."""
    names = sorted(k for k in os.environ if k.startswith("OPSAGENT_CREDENTIAL_"))
    return Outcome.ok(handed=names, pid=os.getpid())


@attrs.frozen
class HoldInput:
    #: After the first read, wait until this file exists, then read again.
    hold: str = ""


def renewed(inp: HoldInput, job: Job) -> Outcome:
    """Digests of its x509_proxy as it reads it at start and again later, and its paths."""
    cred = job.credential("x509_proxy")
    first = hashlib.sha256(cred.read().encode()).hexdigest()
    if inp.hold:
        Path(inp.hold + ".started").touch()
        deadline = time.monotonic() + 30
        while not Path(inp.hold).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    again = hashlib.sha256(cred.read().encode()).hexdigest()
    return Outcome.ok(first=first, again=again, path=str(cred.path), origin=str(cred.origin))


@hookimpl
def register_capabilities(register):
    register(Capability(msg_type="ops_renewed", input=HoldInput, doer=renewed,
                        credentials=("x509_proxy",), concurrency=2,
                        events={"ok": "ops_renewed_done", "error": "ops_renewed_failed"}))
    register(Capability(msg_type="ops_work", input=WorkInput, doer=work, isolation="thread",
                        events={"ok": "ops_work_done", "error": "ops_work_failed"}))
    register(Capability(msg_type="ops_needs_token", input=WorkInput, doer=work,
                        isolation="thread", credentials=("ops_token",),
                        events={"ok": "ops_token_used", "error": "ops_token_failed"}))
    register(Capability(msg_type="ops_optional", input=WorkInput, doer=handed_over,
                        credentials=("ops_extra",), optional_credentials=("ops_extra",),
                        events={"ok": "ops_optional_done", "error": "ops_optional_failed"}))
    # Under the msg_type the monitor's action ids know (payload_log_fetch).
    register(Capability(msg_type="fetch_payload_log", input=FetchInput, doer=fetch,
                        isolation="thread",
                        events={"ok": "payload_log_ready", "error": "payload_log_failed"},
                        echo=lambda inp: {"pandaid": inp.pandaid, "jeditaskid": inp.jeditaskid},
                        action="payload_log_fetch", subject_type="panda_job",
                        subject_key=lambda inp: inp.pandaid, sublevel="normal"))
