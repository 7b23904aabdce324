"""Capabilities for the host's own tests (found through a dist-info on PYTHONPATH)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import attrs
from opsagent import Capability, Digits, Job, JobFailed, Outcome, hookimpl, pattern


@attrs.frozen
class EchoInput:
    text: str = ""
    fail: bool = False


def echo(inp: EchoInput, job: Job) -> Outcome:
    if inp.fail:
        raise JobFailed(f"asked to fail: {inp.text}")
    return Outcome.ok(text=inp.text, pid=os.getpid())


@attrs.frozen
class SleepInput:
    seconds: float
    key: str = "k"
    grandchild: bool = False
    marker: str = attrs.field(default="", validator=pattern(r"[A-Za-z0-9_-]*", "a marker word"))


def sleep(inp: SleepInput, job: Job) -> Outcome:
    if inp.grandchild:
        # A grandchild that would outlive a naive kill of the direct child.
        subprocess.Popen(["sleep", str(inp.seconds + 600)], env=dict(job.env))  # noqa: S603
    time.sleep(inp.seconds)
    return Outcome.ok(slept=inp.seconds, pid=os.getpid())


@attrs.frozen
class WriteInput:
    n: Digits


def side_effect(inp: WriteInput, job: Job) -> Outcome:
    """The effect (``<n>.done``, written whole by a rename) and then a line in
    ``<n>.runs`` per time it took place: more than one line is an effect that happened
    twice."""
    base = job.cache_dir / "side-effects"
    base.mkdir(parents=True, exist_ok=True)
    part = base / f"{inp.n}.{job.attempt}.{os.getpid()}.part"
    part.write_text(inp.n)
    part.rename(base / f"{inp.n}.done")
    with open(base / f"{inp.n}.runs", "a") as fh:
        fh.write(f"{job.id}\n")
    return Outcome.ok(n=inp.n)


def side_effect_reconcile(inp: WriteInput | SlowEffectInput, job: Job) -> Outcome | None:
    """An interrupted run took effect when ``<n>.done`` is there."""
    if (job.cache_dir / "side-effects" / f"{inp.n}.done").exists():
        return Outcome.ok(n=inp.n, reconciled=True)
    return None


@attrs.frozen
class SlowEffectInput:
    n: Digits
    before: float = 0.0
    after: float = 0.0
    #: Also start a process in a session of its own (as xrdcp is) that outlives the job.
    ghost: bool = False


def slow_effect(inp: SlowEffectInput, job: Job) -> Outcome:
    """``side_effect`` between two waits (on the first attempt only), so that a test can
    kill the host before or after the effect took place."""
    first = job.attempt == 1
    if inp.ghost and first:
        subprocess.Popen(["sleep", "600"], env=dict(job.env),  # noqa: S603, S607
                         start_new_session=True)
    time.sleep(inp.before if first else 0)
    side_effect(WriteInput(inp.n), job)
    time.sleep(inp.after if first else 0)
    return Outcome.ok(n=inp.n, attempt=job.attempt)


@attrs.frozen
class EnvInput:
    pass


def show_env(inp: EnvInput, job: Job) -> Outcome:
    secret = job.credential("testcred").read()
    # ``cred`` is scrubbed by the host; the digest shows the job read the right value.
    # ``main``: "__mp_main__" if multiprocessing ran the host's main module again here.
    marks = {k: os.environ.get(k) for k in ("OPSAGENT_STATE_DIR", "OPSAGENT_JOB_ID")}
    return Outcome.ok(env=sorted(os.environ), cred=secret, marks=marks,
                      cred_sha256=hashlib.sha256(secret.encode()).hexdigest(),
                      main=sys.modules["__main__"].__name__)


@attrs.frozen
class TokenReadInput:
    seconds: float


def read_token(inp: TokenReadInput, job: Job) -> Outcome:
    """Read the live token file over and over for ``seconds``: what a reader sees across a
    renewal; ``own``: the job's own copy of it at the end (it never changes)."""
    import json

    cred = job.credential("testtoken")
    path = cred.origin or cred.path
    assert path is not None and cred.path is not None
    seen: list[str] = []
    reads = torn = 0
    end = time.monotonic() + inp.seconds
    while time.monotonic() < end:
        reads += 1
        try:
            token = json.loads(path.read_bytes())["id_token"]
        except (ValueError, KeyError, OSError):
            torn += 1
            continue
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        if not seen or seen[-1] != digest:
            seen.append(digest)
        time.sleep(0.002)
    own = json.loads(cred.path.read_bytes())["id_token"]
    return Outcome.ok(
        reads=reads, torn=torn, tokens=seen, own=hashlib.sha256(own.encode()).hexdigest()[:16]
    )


@attrs.frozen
class NoopInput:
    seconds: float = 0.0


def noop(inp: NoopInput, job: Job) -> Outcome:
    if inp.seconds:
        time.sleep(inp.seconds)
    return Outcome.ok()


@attrs.frozen
class FloodInput:
    mb: int = 1


def flood(inp: FloodInput, job: Job) -> Outcome:
    """Print ``mb`` MiB to standard output (the host keeps only a bounded head and tail)."""
    line = b"x" * 1023 + b"\n"
    block = line * 1024
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    with out:
        for _ in range(inp.mb):
            out.write(block)
    return Outcome.ok(printed_mb=inp.mb)


@attrs.frozen
class FillInput:
    mb: int
    name: str = attrs.field(default="fill", validator=pattern(r"[a-z0-9]{1,20}", "a file word"))


def fill(inp: FillInput, job: Job) -> Outcome:
    """Write ``mb`` MiB into the cache (fails with ENOSPC on a cache that is too small)."""
    base = job.cache_dir / "fill"
    base.mkdir(parents=True, exist_ok=True)
    block = b"\0" * (1 << 20)
    try:
        with open(base / inp.name, "wb") as fh:
            for _ in range(inp.mb):
                fh.write(block)
    except OSError as exc:
        (base / inp.name).unlink(missing_ok=True)
        raise JobFailed(f"cache write failed: {exc.strerror}") from None
    return Outcome.ok(written_mb=inp.mb)


@attrs.frozen
class HogInput:
    mb: int = 0
    #: Allocate in a program the job starts rather than in the job itself.
    program: bool = False


def hog(inp: HogInput, job: Job) -> Outcome:
    """Hold ``mb`` MiB, and say under which address-space limit the job runs."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    adj = open("/proc/self/oom_score_adj").read().strip()  # noqa: SIM115
    if inp.program:
        done = subprocess.run([sys.executable, "-c", f"bytearray({inp.mb} << 20)"],  # noqa: S603
                              capture_output=True, text=True, env=dict(job.env))
        if done.returncode:
            raise JobFailed(f"program failed: {done.stderr.strip().splitlines()[-1]}")
    else:
        held = bytearray(inp.mb << 20)
        held[:: 1 << 12] = b"\1" * len(held[:: 1 << 12])  # resident, not just reserved
    return Outcome.ok(held_mb=inp.mb, rlimit_as=limit, oom_score_adj=int(adj))


@hookimpl
def register_capabilities(register):
    register(Capability(msg_type="test_noop", input=NoopInput, doer=noop, isolation="thread",
                        events={"ok": "test_noop_done", "error": "test_noop_failed"},
                        concurrency=2, queue_limit=200000, time_limit=120))
    register(Capability(msg_type="test_noop_process", input=NoopInput, doer=noop,
                        events={"ok": "test_noop_done", "error": "test_noop_failed"}))
    register(Capability(msg_type="test_echo", input=EchoInput, doer=echo, isolation="thread",
                        events={"ok": "test_echoed", "error": "test_echo_failed"}, concurrency=2,
                        echo=lambda inp: {"text": inp.text}))
    register(Capability(msg_type="test_sleep", input=SleepInput, doer=sleep, time_limit=2.0,
                        events={"ok": "test_slept", "error": "test_sleep_failed"},
                        dedup_key=lambda inp: inp.key, concurrency=1, queue_limit=5))
    register(Capability(msg_type="test_sleep_thread", input=SleepInput, doer=sleep,
                        time_limit=0.5, isolation="thread",
                        events={"ok": "test_slept", "error": "test_sleep_failed"}))
    register(Capability(msg_type="test_side_effect", input=WriteInput, doer=side_effect,
                        events={"ok": "test_written", "error": "test_write_failed"},
                        echo=lambda inp: {"n": inp.n}, concurrency=2, queue_limit=20000,
                        reconcile=side_effect_reconcile))
    register(Capability(msg_type="test_slow_effect", input=SlowEffectInput, doer=slow_effect,
                        events={"ok": "test_written", "error": "test_write_failed"},
                        echo=lambda inp: {"n": inp.n}, time_limit=30,
                        reconcile=side_effect_reconcile))
    register(Capability(msg_type="test_env", input=EnvInput, doer=show_env,
                        credentials=("testcred",),
                        events={"ok": "test_env_shown", "error": "test_env_failed"}))
    register(Capability(msg_type="test_read_token", input=TokenReadInput, doer=read_token,
                        credentials=("testtoken",), time_limit=60,
                        events={"ok": "test_token_read", "error": "test_token_failed"}))
    register(Capability(msg_type="test_flood", input=FloodInput, doer=flood, time_limit=120,
                        events={"ok": "test_flooded", "error": "test_flood_failed"}))
    register(Capability(msg_type="test_fill", input=FillInput, doer=fill,
                        events={"ok": "test_filled", "error": "test_fill_failed"}))
    register(Capability(msg_type="test_hog", input=HogInput, doer=hog, time_limit=30,
                        events={"ok": "test_hogged", "error": "test_hog_failed"}))
