"""Running a chain: each step a job of its own, through the path a request takes.

The chain's job runs on its capability's lane like any job; this is its doer, in the
host.  For each step it does what the dispatcher does for a request -- records the
step's acceptance in the journal (job id ``<chain job id>/<n>.<step name>``), holds its
dedup key in the ledger (a request of the same capability with the same key in flight:
the step ends ``skipped``), hands it to the step capability's lane (its isolation, time
limit, memory limit) -- and waits for its end, which the host completes like any job's:
recorded, published, reported to the monitor.  A step the journal has already seen end
(a chain redelivered after the host died) is not run again: its recorded outcome
stands, so the chain resumes at the first unfinished step.

A step handed back unfinished (the host is stopping) hands the chain back too: its
message stays unacknowledged and the redelivery resumes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from loguru import logger

from opsagent.capability import Capability, DeclarationError
from opsagent.chain import Chain, Step
from opsagent.host.config import ChainConfig
from opsagent.host.journal import Journal, digest
from opsagent.host.ledger import INTERNAL, Ledger, Ticket
from opsagent.outcome import SUCCESSES, Outcome
from opsagent.schema import InputError, structure, unstructure

#: How often a waiting chain looks whether its step was handed back.
POLL = 0.05


def step_id(chain_job_id: str, n: int, step: Step) -> str:
    """The job id of step ``n`` (from 1) of a chain job: the ``/`` keeps it out of reach
    of any request_id, which cannot hold one."""
    return f"{chain_job_id}/{n}.{step.label}"


@attrs.frozen
class Planned:
    step: Step
    cap: Capability | None
    inp: Any = None
    body: dict[str, Any] = attrs.Factory(dict)
    #: Why the step cannot run on this host (no such capability).
    missing: str | None = None


class ChainRunner:
    """Runs chain jobs (``Capability.steps``) for the workers."""

    def __init__(
        self,
        *,
        capabilities: Mapping[str, Capability],
        journal: Journal,
        ledger: Ledger,
        submit: Callable[[Ticket], bool],
        finish: Callable[[Ticket, Outcome], None],
        unavailable: Mapping[str, str],
    ) -> None:
        self.capabilities = capabilities
        self.journal = journal
        self.ledger = ledger
        self.submit = submit
        self.finish = finish
        self.unavailable = unavailable

    def plan(self, chain: Capability, inp: Any) -> list[Planned] | Outcome:
        """Each step with its structured input, or the chain's error outcome when one
        step's input is invalid (then no step runs)."""
        return plan(chain, inp, self.capabilities)

    def run(self, ticket: Ticket) -> Outcome | None:
        """The chain job of ``ticket``: its outcome, or None to hand it back."""
        chain = ticket.cap
        plan = self.plan(chain, ticket.inp)
        if isinstance(plan, Outcome):
            return plan
        deadline = time.monotonic() + chain.time_limit
        log = logger.bind(job_id=ticket.job_id, msg_type=chain.msg_type)
        results: list[dict[str, Any]] = []
        for n, planned in enumerate(plan, 1):
            if ticket.cancel.is_set():
                return None
            sid = step_id(ticket.job_id, n, planned.step)
            outcome = self._step(ticket, sid, planned, deadline)
            if outcome is None:
                log.info("chain {} handed back at step {} ({})", ticket.job_id, n, sid)
                return None
            results.append(step_result(planned, sid, outcome))
        return summary(len(plan), results)

    def _step(self, chain: Ticket, sid: str, planned: Planned, deadline: float) -> Outcome | None:
        log = logger.bind(job_id=sid, msg_type=planned.step.msg_type)
        cap = planned.cap
        if cap is None:
            log.warning("chain step {} not run: {}", sid, planned.missing)
            return Outcome.error(f"not run: {planned.missing}")
        input_digest = digest(planned.inp)
        key = cap.key_of(planned.inp)
        entry = self.journal.get(sid)
        if entry is not None and entry.state == "finished" and entry.outcome is not None:
            log.info("chain step {} ended {} before; not run again", sid, entry.outcome.status)
            return entry.outcome
        refused = None
        if time.monotonic() > deadline:
            refused = Outcome.error(
                f"not run: the chain {chain.cap.msg_type} ran past its time limit of "
                f"{chain.cap.time_limit:g} s"
            )
        elif cap.msg_type in self.unavailable:
            reason = self.unavailable[cap.msg_type]
            log.warning("chain step {} not run: {} is unavailable: {}", sid, cap.msg_type, reason)
            refused = Outcome.error(f"not run: {cap.msg_type} is unavailable: {reason}")
        entry = self.journal.accept(sid, cap.msg_type, key, planned.body, input_digest)
        if entry.state == "finished" and entry.outcome is not None:
            return entry.outcome
        done = threading.Event()
        ended: list[Outcome] = []

        def on_end(outcome: Outcome) -> None:
            ended.append(outcome)
            done.set()

        step = Ticket(
            job_id=sid,
            cap=cap,
            inp=planned.inp,
            body=planned.body,
            echo={
                **cap.echo_of(planned.inp),
                "chain": chain.cap.msg_type,
                "chain_job_id": chain.job_id,
            },
            dedup_key=key,
            reply_to=None,
            delivery=INTERNAL,
            digest=input_digest,
            attempt=entry.attempts,
            interrupted=entry.state == "running",
            on_end=on_end,
        )
        if refused is not None:
            # Not run, yet a step like any other: journaled, its event and its record.
            self.finish(step, refused)
            return refused
        other = self.ledger.admit(step)
        if other is not None:
            outcome = Outcome.skipped(
                f"duplicate: {cap.msg_type} job {other.job_id} with the same key ({key}) is "
                f"in flight; this step was not run"
            )
            self.finish(step, outcome)
            return outcome
        if not self.submit(step):
            self.ledger.release(step)
            outcome = Outcome.error(
                f"busy: {cap.queue_limit} {cap.msg_type} jobs are already waiting"
            )
            self.finish(step, outcome)
            return outcome
        log.info("chain {}: step {} queued", chain.job_id, sid)
        while not done.wait(POLL):
            if chain.cancel.is_set():
                step.cancel.set()
                if step.started_at is None:
                    # Queued behind a lane that stopped taking work: handed back here.
                    self.ledger.release(step)
                    return None
            if not step.ended and self.ledger.get(sid) is None:
                return None  # handed back
        return ended[0]


def plan(
    chain: Capability, inp: Any, capabilities: Mapping[str, Capability]
) -> list[Planned] | Outcome:
    """Each step of ``chain`` with its structured input (the chain's input fields the
    step takes, then the step's own), or the chain's error outcome when one step's input
    is invalid (then no step runs)."""
    given = {k: v for k, v in unstructure(inp).items() if v is not None}
    out: list[Planned] = []
    for step in chain.steps:
        cap = capabilities.get(step.msg_type)
        if cap is None or cap.control or cap.steps:
            why = (
                "a chain or control capability cannot be a step"
                if cap is not None
                else f"no capability {step.msg_type!r} on this host"
            )
            out.append(Planned(step, None, missing=why))
            continue
        takes = {f.name for f in attrs.fields(cap.input)}
        body = {**{k: v for k, v in given.items() if k in takes}, **step.input}
        try:
            step_inp = structure(body, cap.input)
        except InputError as exc:
            return Outcome.error(
                f"invalid input for step {step.label} ({step.msg_type}): {exc}; no step ran",
                errors=exc.errors,
            )
        out.append(Planned(step, cap, step_inp, body))
    return out


def step_result(planned: Planned, sid: str, outcome: Outcome) -> dict[str, Any]:
    """One step's line in the chain's ``results``."""
    return {
        "step": planned.step.label,
        "msg_type": planned.step.msg_type,
        "job_id": sid,
        "outcome": outcome.status,
        **({"reason": outcome.reason} if outcome.reason else {}),
    }


def summary(steps: int, results: list[dict[str, Any]]) -> Outcome:
    """The chain's outcome from its steps' results: ``error`` when one did not succeed
    (a program's non-zero exit among them, unlike the old chain)."""
    failed = [r["step"] for r in results if r["outcome"] not in SUCCESSES]
    data = {
        "steps": steps,
        "failed": failed,
        # The old agent's name for the steps that failed.
        "raised": failed,
        "skipped": [r["step"] for r in results if r["outcome"] == "skipped"],
        "results": results,
    }
    if failed:
        return Outcome.error(f"step(s) failed: {', '.join(failed)}", **data)
    return Outcome.ok(**data)


def from_config(chain: ChainConfig) -> Capability:
    """The capability of a ``[[chain]]`` table (raises ``DeclarationError``)."""
    events = chain.events or {"ok": f"{chain.msg_type}_done", "error": f"{chain.msg_type}_failed"}
    try:
        steps = [Step(s.msg_type, s.input, s.name) for s in chain.steps]
    except DeclarationError as exc:
        raise DeclarationError(f"[[chain]] {chain.msg_type}: {exc}") from None
    return Chain(
        msg_type=chain.msg_type,
        steps=steps,
        events=events,
        action=chain.action,
        time_limit=chain.time_limit,
        description=chain.description or f"A chain of {len(steps)} steps ([[chain]]).",
        distribution="[[chain]]",
    )
