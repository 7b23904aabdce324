"""How a job ends: exactly one terminal :class:`Outcome` per accepted job."""

from __future__ import annotations

from typing import Any

import attrs

#: ``ok``: done; ``error``: failed with a reason; ``timeout``: killed at its time limit;
#: ``unrecorded``: the work happened but its bookkeeping failed (e.g. a PanDA task was
#: submitted but the catalogue could not be told) -- the data says what to re-record;
#: ``skipped``: nothing to do this time (the doer said so); ``warning``: done, with
#: something a person should look at; ``unverified``: the request was accepted but its
#: effect could not be confirmed (a PanDA pause whose status did not change).
STATUSES = frozenset({"ok", "error", "timeout", "unrecorded", "skipped", "warning", "unverified"})
#: The outcomes that count as success: the event says ``ok: true``.
SUCCESSES = frozenset({"ok", "skipped", "warning"})


def _items(value: Any) -> tuple[Outcome, ...]:
    return tuple(value)


#: Severities the monitor's Capcom notice store takes.
SEVERITIES = ("info", "warning")
#: Longest title and detail the host posts (cut, not refused: a notice is best effort).
TITLE_MAX = 300
DETAIL_MAX = 2000


def _title(value: Any) -> str:
    return str(value)[:TITLE_MAX]


def _detail(value: Any) -> str:
    return str(value)[:DETAIL_MAX]


@attrs.frozen
class Notice:
    """A Capcom notice a job asks the host to post to the monitor once it has ended
    (``POST <monitor>/api/capcom/notices/ingest/`` with the monitor's token, one attempt,
    never resent -- as the old agent posted them; docs/wire.md, "The monitor").

    The capability holds no monitor token: the host posts it, with the action record,
    and only when the job's end is reported at all (a quiet end posts nothing).
    ``url`` starting with ``/`` is a path on the monitor's public address
    (``[monitor] public_url``); ``dedup_key`` is the monitor's, e.g.
    ``delivery-daily:2026-12-02``.
    """

    source: str = attrs.field(validator=attrs.validators.matches_re(r"[A-Za-z0-9_.:-]{1,100}"))
    severity: str = attrs.field(validator=attrs.validators.in_(SEVERITIES))
    title: str = attrs.field(converter=_title)
    url: str = attrs.field(validator=attrs.validators.matches_re(r"(/|https://)[^\s]{0,500}"))
    dedup_key: str = attrs.field(validator=attrs.validators.matches_re(r"[^\s]{1,200}"))
    detail: str = attrs.field(default="", converter=_detail)

    def to_json(self) -> dict[str, str]:
        return attrs.asdict(self)


def _notices(value: Any) -> tuple[Notice, ...]:
    out = tuple(value)
    for n in out:
        if not isinstance(n, Notice):
            raise TypeError(f"Outcome.notices: expected Notice, got {type(n).__name__}")
    return out


class JobFailed(Exception):
    """Raised by a doer to end its job with outcome ``error`` and a reason a person can act on.

    ``data`` is merged into the event (for example an id that was obtained before the
    failure).
    """

    def __init__(self, reason: str, **data: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


@attrs.frozen
class Outcome:
    """The terminal result of one job: a status, a reason when not ``ok``, and event data."""

    status: str = attrs.field(validator=attrs.validators.in_(STATUSES))
    reason: str | None = None
    data: dict[str, Any] = attrs.field(factory=dict)
    #: One outcome per item of a batch input, in the order of ``Capability.items``
    #: (see there); an item past the end gets this outcome.
    items: tuple[Outcome, ...] = attrs.field(default=(), converter=_items)
    #: Capcom notices the host posts to the monitor after the job's end (see
    #: :class:`Notice`); the event does not carry them.
    notices: tuple[Notice, ...] = attrs.field(default=(), converter=_notices)

    @classmethod
    def ok(cls, **data: Any) -> Outcome:
        return cls("ok", None, data)

    @classmethod
    def error(cls, reason: str, **data: Any) -> Outcome:
        return cls("error", reason, data)

    @classmethod
    def timeout(cls, reason: str, **data: Any) -> Outcome:
        return cls("timeout", reason, data)

    @classmethod
    def unrecorded(cls, reason: str, **data: Any) -> Outcome:
        return cls("unrecorded", reason, data)

    @classmethod
    def skipped(cls, reason: str, **data: Any) -> Outcome:
        return cls("skipped", reason, data)

    @classmethod
    def warning(cls, reason: str, **data: Any) -> Outcome:
        return cls("warning", reason, data)

    @classmethod
    def unverified(cls, reason: str, **data: Any) -> Outcome:
        return cls("unverified", reason, data)

    @property
    def succeeded(self) -> bool:
        """``ok``, ``skipped`` or ``warning``: the event says ``ok: true``."""
        return self.status in SUCCESSES

    def with_items(self, items: list[Outcome] | tuple[Outcome, ...]) -> Outcome:
        """This outcome, for a batch whose items ended with ``items``."""
        return attrs.evolve(self, items=tuple(items))

    def item(self, index: int) -> Outcome:
        """The outcome of item ``index`` of a batch: its own, or this one when the doer
        did not reach it."""
        return self.items[index] if index < len(self.items) else attrs.evolve(self, items=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "reason": self.reason, "data": self.data}
        if self.items:
            out["items"] = [item.to_json() for item in self.items]
        if self.notices:
            out["notices"] = [n.to_json() for n in self.notices]
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Outcome:
        items = tuple(cls.from_json(item) for item in obj.get("items") or ())
        notices = tuple(Notice(**n) for n in obj.get("notices") or ())
        return cls(obj["status"], obj.get("reason"), dict(obj.get("data") or {}), items, notices)
