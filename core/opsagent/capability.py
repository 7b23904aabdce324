"""The capability declaration: everything the host needs to know to run one ``msg_type``.

A capability package hands one :class:`Capability` per message type to the host
through the ``register_capabilities`` hook.  The declaration is readable at a glance;
the work is a plain function ``doer(inp, job) -> Outcome`` that runs the same way from
the host, from ``opsagent do`` and from a test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from opsagent.outcome import STATUSES, SUCCESSES, Outcome

Isolation = Literal["process", "thread"]

_MSG_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_NAME = r"^([a-z][a-z0-9_]{0,63})?$"
_CREDENTIAL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
CONTROL_TYPES = frozenset({"health_ping", "shutdown", "request_status"})
#: Input fields that name who asked, looked for in this order (``Capability.username``).
USER_FIELDS = ("requested_by", "owner", "created_by")


class DeclarationError(ValueError):
    """A capability declaration that the host refuses to register."""


def _check_msg_type(_inst: object, _attr: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not _MSG_TYPE.match(value):
        raise DeclarationError(
            f"msg_type: expected lower_snake_case of at most 64 characters, got {value!r}"
        )


def _check_input(_inst: object, _attr: attrs.Attribute, value: type) -> None:
    if not (isinstance(value, type) and attrs.has(value)):
        raise DeclarationError(f"input: expected an attrs class, got {value!r}")


def _check_credentials(_inst: object, _attr: attrs.Attribute, value: tuple[str, ...]) -> None:
    for name in value:
        if not isinstance(name, str) or not _CREDENTIAL.match(name):
            raise DeclarationError(f"credentials: {name!r} is not a valid credential name")
    if len(set(value)) != len(value):
        raise DeclarationError(f"credentials: duplicate names in {value!r}")


def _check_events(inst: Capability, _attr: attrs.Attribute, value: Mapping[str, str]) -> None:
    unknown = set(value) - STATUSES
    if unknown:
        raise DeclarationError(
            f"events: unknown outcome(s) {sorted(unknown)}; known: {sorted(STATUSES)}"
        )
    for status in ("ok", "error"):
        if status not in value:
            raise DeclarationError(f"events: no event declared for outcome {status!r}")
    for status, name in value.items():
        if not isinstance(name, str) or not _MSG_TYPE.match(name):
            raise DeclarationError(f"events[{status!r}]: {name!r} is not a valid event name")


def _freeze_events(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _tuple_of_any(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _tuple_of_samples(value: Any) -> tuple[Mapping[str, Any], ...]:
    return tuple(value)


def _positive(_inst: object, attr: attrs.Attribute, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise DeclarationError(f"{attr.name}: expected a positive number, got {value!r}")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _check_env_name(_inst: object, attr: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or (value and not _ENV_NAME.match(value)):
        raise DeclarationError(f"{attr.name}: {value!r} is not an environment variable name")


def _check_env_names(_inst: object, attr: attrs.Attribute, value: tuple[str, ...]) -> None:
    for name in value:
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise DeclarationError(f"{attr.name}: {name!r} is not an environment variable name")


def _non_negative(_inst: object, attr: attrs.Attribute, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise DeclarationError(f"{attr.name}: expected a number >= 0, got {value!r}")


#: The smallest ``memory_limit``: a job is a fork of the fork server, which has the host
#: and every process capability's modules imported (~150 MiB of address space, ~200 MiB
#: with a few threads), before it allocates anything of its own.
MIN_MEMORY_LIMIT = 256


def check_memory_limit(_inst: object, attr: attrs.Attribute, value: int | None) -> None:
    """A limit in MiB: ``None`` (the default's), 0 (none) or at least MIN_MEMORY_LIMIT."""
    if value is None or (type(value) is int and (value == 0 or value >= MIN_MEMORY_LIMIT)):
        return
    raise DeclarationError(
        f"{attr.name}: expected a number of MiB, 0 (no limit) or at least "
        f"{MIN_MEMORY_LIMIT}, got {value!r}"
    )


def _optional_function(_inst: object, attr: attrs.Attribute, value: object) -> None:
    if value is not None and not callable(value):
        raise DeclarationError(f"{attr.name}: expected a function or None, got {value!r}")


@attrs.frozen(kw_only=True)
class Capability:
    """What a plugin declares for one ``msg_type``.

    ``doer(inp, job)`` receives the structured input (an instance of ``input``) and a
    :class:`~opsagent.job.Job`, and returns an :class:`~opsagent.outcome.Outcome`
    (returning ``None`` means ``Outcome.ok()``).  Raising
    :class:`~opsagent.outcome.JobFailed` ends the job with outcome ``error`` and the
    message as reason; any other exception does too, with the exception named.

    ``events`` maps outcome status (``ok``, ``error``, ``timeout``, ``unrecorded``,
    ``skipped``, ``warning``, ``unverified``) to the wire name of the event published on
    the topic; an undeclared one falls back to the ``ok`` event for a success
    (``skipped``, ``warning``) and to the ``error`` event otherwise.
    ``echo(inp)`` gives the identifying fields every event of the job
    carries (``pandaid``, ``task_name``...), even when the job failed or timed out.
    ``dedup_key(inp)`` returns a key; two jobs with one key never run at once
    (``None``: no dedup).  ``config`` is an attrs class for the capability's own
    ``[capability.<msg_type>]`` configuration section; the job gets an instance.

    ``reconcile(inp, job)`` is for work whose effect must not happen twice.  When it is
    declared, the host records durably that a job has started before its doer runs; a
    redelivered request whose job may have been interrupted mid-run (this host's journal
    says it started, or the broker marks it redelivered and this host never saw it: a
    host that died, a standby taking over) is reconciled first, in the doer's place:
    ``reconcile`` looks at the world (is the file there, does PanDA know the task) and
    returns the job's :class:`~opsagent.outcome.Outcome` when the effect already
    happened, or ``None`` when it did not, and then the doer runs.  An exception from it
    ends the job with ``error`` without running the doer.  Without ``reconcile`` an
    interrupted job simply runs again (the doer is written to be idempotent).

    ``items(inp)`` is for a batch request (many subjects in one message, such as a bulk
    pause of PanDA tasks): it lists the identifying fields of each item, and the job then
    ends with one event per item instead of one -- the item's fields added to ``echo``,
    its outcome taken from :attr:`Outcome.items <opsagent.outcome.Outcome.items>` in the
    same order, and the job's own outcome for every item the doer did not reach (a time
    limit, a crash: each item still gets exactly one terminal event).
    ``extra_time(inp)`` adds seconds to ``time_limit`` for one input (a batch paced one
    item a second needs longer the more items it has); the host's ``time_limit``
    override replaces the base and keeps the addition.

    ``memory_limit`` caps, in MiB, the address space of each ``process`` job and of the
    programs it starts (``RLIMIT_AS``): beyond it an allocation fails, and a job that does
    not recover ends ``error`` with "ran out of memory".  ``None`` takes the host's
    ``[host] job_memory_limit_mb``; ``0`` is no limit (for programs that reserve much more
    address space than they use, such as a JVM).  ``thread`` jobs run in the host's own
    address space and cannot have one.
    """

    msg_type: str = attrs.field(validator=_check_msg_type)
    input: type = attrs.field(validator=_check_input)
    doer: Callable[..., Outcome | None] = attrs.field(validator=attrs.validators.is_callable())
    events: Mapping[str, str] = attrs.field(converter=_freeze_events, validator=_check_events)
    time_limit: float = attrs.field(default=60.0, validator=_positive)
    credentials: tuple[str, ...] = attrs.field(
        default=(), converter=_tuple_of_str, validator=_check_credentials
    )
    #: Names among ``credentials`` the capability can do without: when one is not
    #: configured the capability stays available and its jobs simply do not get it.
    optional_credentials: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    dedup_key: Callable[[Any], str | None] | None = None
    #: The key space of ``dedup_key``: by default the capability's own msg_type, so two
    #: capabilities never collide; capabilities that must never run at once for one
    #: subject share a space (``submit_task`` and ``submit_evgen_task``: ``"submit"``).
    dedup_space: str = attrs.field(default="", validator=attrs.validators.matches_re(_NAME))
    #: The action id of the job's record in the monitor's action log (``task_submit``,
    #: ``payload_log_fetch``...); empty: the msg_type.
    action: str = attrs.field(default="", validator=attrs.validators.matches_re(_NAME))
    #: What the action record is about: ``subject_type`` (``panda_job``,
    #: ``campaign_task``...) and ``subject_key(inp)`` (the pandaid, the task name...);
    #: the monitor's message reads ``<action> <subject_type>:<subject_key> <outcome>``.
    subject_type: str = attrs.field(default="", validator=attrs.validators.matches_re(_NAME))
    subject_key: Callable[[Any], Any] | None = attrs.field(
        default=None, validator=_optional_function
    )
    #: Who the action record names as its user: ``username(inp)``; by default the
    #: input's ``requested_by``, ``owner`` or ``created_by``, the first one set.
    username: Callable[[Any], Any] | None = attrs.field(default=None, validator=_optional_function)
    #: The action record's ``sublevel`` (``low``, ``normal``, ``high``: how much the
    #: monitor's stream shows it) and ``live_default`` (shown in its live view).
    sublevel: str = attrs.field(
        default="low", validator=attrs.validators.in_(("low", "normal", "high"))
    )
    live_default: bool = False
    #: Which ends get an action record: ``always``, or ``failed`` (only an outcome that is
    #: not a success -- the old agent's ``assessment_enforce``).  The event goes out either
    #: way.
    record: str = attrs.field(
        default="always", validator=attrs.validators.in_(("always", "failed"))
    )
    #: Fields of the outcome's data copied into the action record's ``extra_data`` (the
    #: old agent's "counts"); ``None``: every number among them.
    counts: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_tuple_of_str)
    )
    #: ``quiet(inp, outcome)`` true: the job's end is journaled and acknowledged but
    #: neither its event nor its action record goes out (a periodic capture that found
    #: nothing to capture); never for a request someone waits on.
    quiet: Callable[[Any, Outcome], bool] | None = attrs.field(
        default=None, validator=_optional_function
    )
    #: A chain's steps (see :func:`opsagent.chain.Chain`); empty for any other capability.
    steps: tuple[Any, ...] = attrs.field(default=(), converter=_tuple_of_any)
    echo: Callable[[Any], dict[str, Any]] | None = None
    #: Fields an event of an outcome carries unless the doer's data sets them: a
    #: ``timeout`` or ``error`` the host itself ended (a killed job, a crash) then still
    #: has the fields its readers expect, e.g. ``{"timeout": {"status": "timeout"}}``.
    event_defaults: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=lambda v: {k: dict(x) for k, x in dict(v).items()}
    )
    items: Callable[[Any], list[dict[str, Any]]] | None = attrs.field(
        default=None, validator=_optional_function
    )
    extra_time: Callable[[Any], float] | None = attrs.field(
        default=None, validator=_optional_function
    )
    reconcile: Callable[..., Outcome | None] | None = attrs.field(
        default=None, validator=_optional_function
    )
    concurrency: int = attrs.field(default=1, validator=_positive)
    queue_limit: int = attrs.field(default=1000, validator=_positive)
    isolation: Isolation = attrs.field(
        default="process", validator=attrs.validators.in_(("process", "thread"))
    )
    memory_limit: int | None = attrs.field(default=None, validator=check_memory_limit)
    config: type | None = None
    #: A shared top-level table (``[epicprod]``) whose keys are defaults of ``config``
    #: under ``[capability.<msg_type>]``; its name must be declared by the distribution
    #: in the ``opsagent.sections`` entry-point group.
    config_section: str = attrs.field(default="", validator=attrs.validators.matches_re(_NAME))
    control: bool = False
    programs: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    description: str = ""
    #: Variables passed from the host's environment to this capability's jobs, besides
    #: ``[host] env_allow`` (``DJANGO_SETTINGS_MODULE`` for a Django doer).
    env_allow: tuple[str, ...] = attrs.field(
        default=(), converter=_tuple_of_str, validator=_check_env_names
    )
    #: The variable of the old agent that sets ``time_limit`` on this host
    #: (``EPICPROD_CATALOG_IMPORT_TIMEOUT``) unless ``[capability.<msg_type>]`` does.
    time_limit_env: str = attrs.field(default="", validator=_check_env_name)
    #: Seconds past ``time_limit`` before the host kills a job that did not end: for a
    #: doer that enforces ``job.time_limit`` on its own work and reports the timeout in
    #: its own words (a program capability: "timed out after 1800s").
    backstop: float = attrs.field(default=0.0, validator=_non_negative)
    #: ``checks(job)``: the capability's own findings for ``opsagent selftest`` (an
    #: iterable of :class:`~opsagent.checks.Check`), besides the ``capability_checks`` hook.
    checks: Callable[..., Any] | None = attrs.field(default=None, validator=_optional_function)
    samples: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_tuple_of_samples)
    # Filled in by the plugin manager from the entry point's distribution.
    distribution: str = ""
    version: str = ""
    entry_point: str = ""

    def __attrs_post_init__(self) -> None:
        if self.msg_type in CONTROL_TYPES and self.distribution not in ("", "opsagent"):
            raise DeclarationError(f"msg_type: {self.msg_type!r} is reserved for the host")
        extra = set(self.optional_credentials) - set(self.credentials)
        if extra:
            raise DeclarationError(
                f"optional_credentials: {sorted(extra)} not among credentials {self.credentials!r}"
            )
        if self.memory_limit is not None and self.isolation == "thread":
            raise DeclarationError(
                "memory_limit: a thread job runs in the host's own address space and cannot "
                "have a limit of its own; declare isolation='process' or drop memory_limit"
            )
        if self.config is not None and not (
            isinstance(self.config, type) and attrs.has(self.config)
        ):
            raise DeclarationError(f"config: expected an attrs class, got {self.config!r}")

    def event_for(self, status: str) -> str:
        """The wire name of the event that ends a job with outcome ``status``.

        An undeclared outcome takes the ``ok`` event when it is a success (``skipped``,
        ``warning``), the ``error`` event otherwise (``timeout``, ``unrecorded``,
        ``unverified``).
        """
        if status in self.events:
            return self.events[status]
        return self.events["ok" if status in SUCCESSES else "error"]

    def key_of(self, inp: Any) -> str | None:
        """The dedup key of one input, namespaced by msg_type, or ``None``."""
        if self.dedup_key is None:
            return None
        key = self.dedup_key(inp)
        return None if key is None else f"{self.dedup_space or self.msg_type}:{key}"

    def echo_of(self, inp: Any) -> dict[str, Any]:
        return dict(self.echo(inp)) if self.echo is not None else {}

    def items_of(self, inp: Any) -> list[dict[str, Any]] | None:
        """The identifying fields of each item of a batch input, or ``None`` (one event)."""
        return None if self.items is None else [dict(item) for item in self.items(inp)]

    def time_limit_for(self, inp: Any) -> float:
        """The time limit of the job of ``inp``: ``time_limit`` plus ``extra_time(inp)``."""
        if self.extra_time is None or inp is None:
            return self.time_limit
        return self.time_limit + max(0.0, float(self.extra_time(inp)))

    @property
    def action_id(self) -> str:
        """The id of this capability's action records: ``action``, else its msg_type."""
        return self.action or self.msg_type

    def subject_of(self, inp: Any) -> str:
        """The ``subject_key`` of one input's action record ("" when none is declared)."""
        if self.subject_key is None:
            return ""
        key = self.subject_key(inp)
        return "" if key is None else str(key)

    def username_of(self, inp: Any) -> str:
        """The ``username`` of one input's action record (see ``username``)."""
        if self.username is not None:
            who = self.username(inp)
            return "" if who is None else str(who)
        for name in USER_FIELDS:
            who = getattr(inp, name, None)
            if isinstance(who, str) and who:
                return who
        return ""
