"""Steps and chains for the chain tests, found through a dist-info on PYTHONPATH.

``test_step`` runs a real program (a stub doer of the test suite) that exits 0, exits 3,
hangs, or waits for a release file; it writes one line per run to
``<cache>/chain-runs/<name>.runs`` (its job id, attempt and ``created_by``), so a test can
count how often each step ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
from opsagent import Capability, Chain, Job, Outcome, Step, hookimpl, pattern, run

STUB = """
import os, sys, time
mode, release = sys.argv[1], sys.argv[2]
if mode == "fail":
    print("ERROR: the stub doer failed on purpose", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)
if mode == "wait":
    while not os.path.exists(release):
        time.sleep(0.05)
print("done")
"""


@attrs.frozen
class StepInput:
    name: str = attrs.field(validator=pattern(r"[a-z]{1,8}", "a step name"))
    mode: str = attrs.field(default="ok", validator=attrs.validators.in_(
        ("ok", "fail", "hang", "wait")))
    created_by: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(pattern(r"[a-z_]{1,32}", "a name")))


def step(inp: StepInput, job: Job) -> Outcome:
    runs = job.cache_dir / "chain-runs"
    runs.mkdir(parents=True, exist_ok=True)
    with open(runs / f"{inp.name}.runs", "a") as fh:
        fh.write(f"{job.id} {job.attempt} {inp.created_by}\n")
    release = Path(job.cache_dir) / "chain-runs" / f"{inp.name}.release"
    done = run([sys.executable, "-c", STUB, inp.mode, str(release)], env=dict(job.env),
               timeout=job.time_limit + 60)
    if done.returncode != 0:
        return Outcome.error(f"rc={done.returncode}: {done.tail(200)}")
    return Outcome.ok(step=inp.name)


def _chain(msg_type: str, *modes: str) -> Capability:
    names = ["a", "b", "c"]
    return Chain(
        msg_type=msg_type,
        steps=[Step("test_step", name=f"step_{n}", input={"name": n, "mode": m})
               for n, m in zip(names, modes, strict=True)],
        events={"ok": f"{msg_type}_done", "error": f"{msg_type}_failed"},
        sublevel="high",
        live_default=True,
    )


@hookimpl
def register_capabilities(register):
    register(Capability(
        msg_type="test_step", input=StepInput, doer=step, time_limit=20,
        events={"ok": "test_step_done", "error": "test_step_failed"},
        dedup_key=lambda inp: inp.name, echo=lambda inp: {"name": inp.name},
        subject_type="test_step", subject_key=lambda inp: inp.name, concurrency=2))
    # A step whose credential this host does not have: unavailable, never run.
    register(Capability(
        msg_type="test_locked_step", input=StepInput, doer=step, time_limit=20,
        events={"ok": "test_locked_step_done", "error": "test_locked_step_failed"},
        credentials=("test_absent_token",)))
    register(Chain(
        msg_type="test_chain_locked",
        steps=[Step("test_step", name="step_a", input={"name": "a"}),
               Step("test_locked_step", name="step_locked", input={"name": "l"}),
               Step("test_step", name="step_c", input={"name": "c"})],
        events={"ok": "test_chain_locked_done", "error": "test_chain_locked_failed"}))
    register(_chain("test_chain", "ok", "ok", "ok"))
    register(_chain("test_chain_failing", "ok", "fail", "ok"))
    register(_chain("test_chain_hanging", "ok", "hang", "ok"))
    register(_chain("test_chain_waiting", "ok", "wait", "ok"))
