"""Chains: a capability whose steps are other capabilities, run in order by the host.

A chain is declared like any capability and registered through the same hook::

    register(Chain(
        msg_type="catalog_sync",
        steps=[Step("credential_expiry_check"),
               Step("catalog_import", name="catalog_import_csv", input={"source": "csv"}),
               Step("association_sweep")],
        events={"ok": "catalog_sync_done", "error": "catalog_sync_failed"},
    ))

The host runs each step as a job of its own through the path a request takes: journaled
under ``<chain job id>/<n>.<step name>``, deduplicated against a request of the same
capability with the same key (such a step is ``skipped``: that work is under way),
killed at its own time limit, with its own event and action record.  A step that does
not succeed (``error``, ``timeout``, ``unrecorded``, ``unverified``: a non-zero exit of
a program) does not stop the chain; the chain's own outcome is ``ok`` when every step
succeeded, else ``error``, and its data (and action record) say ``steps`` and which
``failed``.  A chain request that comes back after the host died (redelivered) resumes
at the first step whose end the journal has not recorded.

Each step's input is its ``input`` plus the chain request's fields that the step's input
class also has (``created_by`` reaches every step that takes one); all of them are
checked before the first step runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from opsagent.capability import Capability, DeclarationError
from opsagent.outcome import JobFailed, Outcome

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

#: Time limit of a chain as a whole unless declared: each step has its own; a chain not
#: done within this runs no further step.
DEFAULT_CHAIN_LIMIT = 86400.0


@attrs.frozen
class Step:
    """One step of a chain: the capability ``msg_type`` with ``input`` (merged with the
    chain request's fields the capability takes); ``name`` (default: the msg_type) is
    how the chain's summary and the step's job id call it."""

    msg_type: str
    input: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    name: str = ""

    def __attrs_post_init__(self) -> None:
        if not _NAME.match(self.msg_type):
            raise DeclarationError(f"steps: {self.msg_type!r} is not a msg_type")
        if self.name and not _NAME.match(self.name):
            raise DeclarationError(f"steps: step name {self.name!r} is not lower_snake_case")

    @property
    def label(self) -> str:
        return self.name or self.msg_type


@attrs.frozen
class ChainInput:
    """The input of a chain that declares none: who asked, passed to every step that
    takes a ``created_by``."""

    created_by: str | None = None


def _runs_in_host(_inp: Any, _job: Any) -> Outcome:
    raise JobFailed("a chain runs only in the host (opsagent run): its steps are host jobs")


def Chain(  # noqa: N802 - a declaration, read like a class
    *,
    msg_type: str,
    steps: list[Step] | tuple[Step, ...],
    events: Mapping[str, str],
    input: type = ChainInput,  # noqa: A002 - the Capability field's name
    time_limit: float = DEFAULT_CHAIN_LIMIT,
    **more: Any,
) -> Capability:
    """The :class:`~opsagent.capability.Capability` of a chain of ``steps``.

    ``more`` takes the other fields of a capability (``action``, ``description``,
    ``samples``, ``sublevel``...).  By default one run of the chain at a time
    (``dedup_key``), whatever its input.
    """
    steps = tuple(steps)
    if not steps:
        raise DeclarationError(f"{msg_type}: a chain needs at least one step")
    for step in steps:
        if not isinstance(step, Step):
            raise DeclarationError(f"steps: expected Step(...), got {type(step).__name__}")
        if step.msg_type == msg_type:
            raise DeclarationError(f"steps: {msg_type} cannot be a step of itself")
    labels = [s.label for s in steps]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise DeclarationError(f"steps: names used twice: {twice}; give each a name=")
    more.setdefault("dedup_key", lambda _inp: "chain")
    more.setdefault("counts", ("steps", "failed", "raised", "skipped"))
    return Capability(
        msg_type=msg_type,
        input=input,
        doer=_runs_in_host,
        events=events,
        time_limit=time_limit,
        isolation="thread",
        steps=steps,
        **more,
    )
