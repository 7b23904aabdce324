"""Capabilities for the operations tests: selftest findings and the secrets that must not leak.

Found through a dist-info on PYTHONPATH (``tests/siteops``), like ``tests/sitecaps``.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import quote

import attrs
import requests
from opsagent import Capability, Job, JobFailed, Outcome, hookimpl
from opsagent.cli.selftest import Check


@attrs.frozen
class CheckedInput:
    name: str
    count: int = 1


@attrs.frozen
class CheckedConfig:
    service_url: str = "http://127.0.0.1:9/"


def nothing(inp: CheckedInput, job: Job) -> Outcome:
    return Outcome.ok()


@attrs.frozen
class LeakInput:
    how: str
    url: str = ""


def leak(inp: LeakInput, job: Job) -> Outcome:
    """Fails in each way a doer can fail while holding its credential."""
    secret = job.credential("leak_token").read()
    if inp.how == "http401":
        # A server that echoes the request's headers in its 401 body.
        r = requests.get(inp.url, headers={"Authorization": f"Bearer {secret}"}, timeout=5)
        raise JobFailed(f"the service answered {r.status_code}: {r.text}")
    if inp.how == "url":
        raise ValueError(f"cannot open https://operator:{quote(secret, safe='')}@svc.example/x")
    if inp.how == "traceback":
        raise RuntimeError(f"token {secret} refused")
    if inp.how == "log":
        job.log.warning("about to use token {}", secret)
        print(f"stdout: {secret}")
        print(f"stderr: {secret}", file=sys.stderr)
        return Outcome.ok(echoed=secret, nested={"list": [secret]})
    if inp.how == "env":
        return Outcome.ok(value=job.credential("leak_env").read())
    if inp.how == "die":
        # No outcome at all: the host reports the output's tail.
        print(f"dying with {secret}", flush=True)
        os._exit(3)
    raise JobFailed(f"unknown how {inp.how!r}")


def _leak_events(name: str) -> dict[str, str]:
    return {"ok": f"{name}_done", "error": f"{name}_failed"}


@hookimpl
def register_capabilities(register):
    register(Capability(
        msg_type="ops_good", input=CheckedInput, doer=nothing, config=CheckedConfig,
        events={"ok": "ops_good_done", "error": "ops_good_failed"},
        credentials=("ops_token", "ops_extra"), optional_credentials=("ops_extra",),
        programs=("sh",), samples=({"name": "a"}, {"name": "b", "count": 2}),
        isolation="thread",
    ))
    register(Capability(
        msg_type="ops_bad", input=CheckedInput, doer=nothing,
        events={"ok": "ops_bad_done", "error": "ops_bad_failed"},
        credentials=("ops_unsafe",), programs=("opsagent-no-such-program",),
        samples=({"name": "a"}, {"name": 5}), isolation="thread",
    ))
    register(Capability(
        msg_type="ops_leak", input=LeakInput, doer=leak, isolation="thread",
        events=_leak_events("ops_leak"), credentials=("leak_token", "leak_env"),
        optional_credentials=("leak_env",), echo=lambda inp: {"how": inp.how},
    ))
    register(Capability(
        msg_type="ops_leak_process", input=LeakInput, doer=leak,
        events=_leak_events("ops_leak_process"), credentials=("leak_token",),
        echo=lambda inp: {"how": inp.how},
    ))
    register(Capability(
        msg_type="ops_leak_expired", input=LeakInput, doer=leak, isolation="thread",
        events=_leak_events("ops_leak_expired"), credentials=("leak_jwt",),
    ))
    register(Capability(
        msg_type="ops_leak_unsafe", input=LeakInput, doer=leak, isolation="thread",
        events=_leak_events("ops_leak_unsafe"), credentials=("leak_unsafe",),
    ))


@hookimpl
def capability_checks(capability, job, register):
    if capability.msg_type == "ops_good":
        register(Check.ok("service", f"{job.config.service_url} (credentials: "
                                     f"{', '.join(sorted(job.credentials))})"))
        register(Check.warn("quota", "80% used"))
    elif capability.msg_type == "ops_bad":
        raise RuntimeError("catalogue down")
