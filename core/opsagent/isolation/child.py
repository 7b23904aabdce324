"""The child side of ``process`` isolation: ``python -m opsagent.isolation.child``.

Reads a job spec (JSON) on standard input, imports only the plugin module that declared
the capability, runs the doer through :func:`opsagent.isolation.execute.call` -- the same path as
``opsagent do`` -- and writes the outcome to the result file named in the spec.
The host started this process in its own session and kills the whole group at the time
limit, so nothing here needs to watch the clock.  Before anything else the process caps
its own address space at the job's memory limit (``RLIMIT_AS``, inherited by the
programs it starts) and offers itself to the kernel's OOM killer ahead of the host.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import attrs

from opsagent.capability import Capability
from opsagent.job import Job, MemoryNotes, Notes
from opsagent.outcome import JobFailed, Outcome

#: This process's ``oom_score_adj`` (-1000..1000; the host's is usually 0): when the
#: service reaches ``MemoryMax=`` the kernel kills a job before the host.  Raising it
#: needs no privilege; programs the job starts inherit it.
OOM_SCORE_ADJ = 500


def find_capability(module_name: str, msg_type: str) -> Capability:
    from opsagent.host.plugins import declared_by

    for cap in declared_by(importlib.import_module(module_name)):
        if cap.msg_type == msg_type:
            return cap
    raise LookupError(f"{module_name} no longer declares {msg_type}")


def limit_memory(mib: int) -> None:
    """Cap this process's address space, and that of what it starts, at ``mib`` MiB
    (0: leave it alone).  Soft and hard alike: a program the job runs cannot lift it."""
    if mib:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = mib << 20 if hard == resource.RLIM_INFINITY else min(mib << 20, hard)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (OSError, ValueError) as exc:
            # Refused (a seccomp filter without prlimit64?): not run without its limit.
            raise RuntimeError(f"cannot cap its address space at {mib} MiB: {exc}") from None
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write(str(OOM_SCORE_ADJ))
    except OSError:
        pass  # no /proc: the limit above still holds


def out_of_memory(mib: int) -> str:
    if not mib:
        return "ran out of memory (it has no memory_limit: the machine's memory)"
    return f"ran out of memory: over its {mib} MiB limit (memory_limit)"


def _bounded(cap: Capability, mib: int) -> Capability:
    """``cap`` whose doer and reconcile report a MemoryError as the job's memory limit."""

    def guard(fn: Any) -> Any:
        def call(inp: Any, job: Job) -> Outcome | None:
            try:
                out: Outcome | None = fn(inp, job)
                return out
            except MemoryError:
                raise JobFailed(out_of_memory(mib)) from None

        return call

    recon = None if cap.reconcile is None else guard(cap.reconcile)
    return attrs.evolve(cap, doer=guard(cap.doer), reconcile=recon)


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    from opsagent import schema
    from opsagent.isolation import execute
    from opsagent.isolation.jobs import job_from_spec

    if spec.get("program") is not None:
        from opsagent.host.programs import capability_of

        cap = capability_of(spec["program"])
    else:
        cap = find_capability(spec["module"], spec["msg_type"])
    mib = int(spec.get("memory_limit") or 0)
    if mib:
        cap = _bounded(cap, mib)
    inp = schema.structure(spec["input"], cap.input)
    notes: Notes
    if spec.get("journal"):
        from opsagent.host.journal import Journal

        notes = Journal(Path(spec["journal"]))
    else:
        notes = MemoryNotes()
    job = job_from_spec(spec, cap, os.environ, notes)
    if not any(c.path is not None for c in job.credentials.values()):
        return execute.call(cap, inp, job).to_json()
    # The job's own copies of its file credentials, taken now: a renewal while it runs
    # does not change them under it; the next job copies the renewed file.
    from opsagent.credentials import store as creds
    from opsagent.private import private_dir

    with private_dir(job.env) as copies:
        held = creds.snapshot(job.credentials, copies)
        env = {**job.env, **creds.to_env(held)}
        job = attrs.evolve(job, credentials=held, env=env)
        return execute.call(cap, inp, job).to_json()


def _terminated(signum: int, _frame: Any) -> None:
    # The host is killing this job: programs the doer started in sessions of their own
    # (opsagent.isolation.proc.run) go with it.
    from opsagent.isolation import proc

    proc.kill_live_groups()
    os._exit(128 + signum)


def main() -> int:
    return main_with(json.loads(sys.stdin.buffer.read()))


def main_with(spec: dict[str, Any]) -> int:
    """Run one job spec and write its outcome to ``spec["result"]``."""
    from loguru import logger

    logger.remove()
    logger.add(
        sys.stderr,
        level=os.environ.get("OPSAGENT_CHILD_LOG_LEVEL", "INFO"),
        diagnose=False,
        format="{time:HH:mm:ss.SSS} {level} {message}",
    )
    result_path = Path(spec["result"])
    signal.signal(signal.SIGTERM, _terminated)
    mib = int(spec.get("memory_limit") or 0)
    try:
        limit_memory(mib)
        result = run_spec(spec)
    except MemoryError:
        result = Outcome.error(out_of_memory(mib)).to_json()
    except Exception as exc:  # noqa: BLE001 - reported as the job's outcome
        logger.opt(exception=True).error("job could not start")
        result = {
            "status": "error",
            "reason": f"job could not start: {type(exc).__name__}: {exc}",
            "data": {},
        }
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
