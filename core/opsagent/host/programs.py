"""Program capabilities declared in the host's configuration: ``[[program]]`` tables.

The ops team declares a program capability without writing a package::

    [[program]]
    msg_type = "disk_usage"
    argv = ["/usr/bin/du", "-s", "--", "{path}"]
    events = { ok = "disk_usage_ready", error = "disk_usage_ready" }
    time_limit = 60
    dedup_key = "disk_usage:{path}"

    [program.input.path]
    type = "string"
    pattern = "/data/[a-z0-9/]{1,200}"
    what = "a path under /data"

Each table is checked at start-up like any declaration, with the same ``$.path`` errors;
a broken one is reported by the plugin loader (``opsagent plugins`` shows it broken) and
the host starts with the rest.  A job process rebuilds its capability from the table
(the host hands it over in the job's spec), so process isolation applies unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from opsagent.capability import Capability, DeclarationError
from opsagent.program import MAX_ARG, Flag, Option, Program, Value
from opsagent.schema import Digits, FieldError, InputError, make_converter, pattern, shown

#: ``type`` of an input field -> its Python type.
TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "digits": Digits,
    "strings": list[str],
}
#: What ``entry_point`` says of a capability declared in configuration.
MODULE = "opsagent.host.programs"


@attrs.frozen
class FieldTable:
    """``[program.input.<name>]``: one input field."""

    type: str = attrs.field(validator=attrs.validators.in_(tuple(TYPES)))
    required: bool = False
    default: Any = None
    #: A regular expression the whole value (each value of ``strings``) must match.
    pattern: str | None = None
    #: What the pattern stands for, in errors (``expected <what>, got ...``).
    what: str = ""
    description: str = ""


@attrs.frozen
class ArgTable:
    """An argv element written as a table: ``{ option = "--only", field = "only" }`` or
    ``{ flag = "--all", field = "all" }``."""

    field: str
    option: str | None = None
    flag: str | None = None


@attrs.frozen
class ProgramTable:
    """``[[program]]``: the keys of :class:`opsagent.Program` a configuration can give."""

    #: The message type it answers.
    msg_type: str
    #: The program and its arguments: literals, ``"{field}"`` placeholders, and tables
    #: ``{ option = "--x", field = "f" }`` / ``{ flag = "--y", field = "g" }``.
    argv: list[str | ArgTable]
    #: Outcome -> event name; ``ok`` and ``error`` at least.
    events: dict[str, str]
    #: ``[program.input.<name>]`` tables: ``type``, ``required``, ``default``,
    #: ``pattern``, ``what``, ``description``.
    input: dict[str, FieldTable] = attrs.Factory(dict)
    #: The working directory: a path, or one configured value ``"{name}"``.
    cwd: str | None = None
    #: Variables passed from the host's environment, besides ``[host] env_allow``.
    env: list[str] = attrs.Factory(list)
    #: Seconds the program may run.
    time_limit: float = 60.0
    #: A variable that sets ``time_limit`` on this host.
    time_limit_env: str = ""
    #: A template over input fields: two jobs with one key never run at once.
    dedup_key: str | None = None
    #: An input field written to the program's standard input as JSON.
    stdin: str | None = None
    #: Exit status (a string key) -> outcome; others are ``error``.
    exit_codes: dict[str, str] = attrs.Factory(lambda: {"0": "ok"})
    #: ``text``, ``last_json``, ``json_list``, ``summary_line`` or ``skipped_prefix``.
    stdout: str = "text"
    #: ``lines``, ``on_failure`` or ``none``: the program's output in the job log.
    relay: str = "lines"
    #: ``last_line``, ``first_line`` or ``all``: standard output in the event's ``summary``.
    summary: str = ""
    #: The event field that gets the parsed standard output.
    result: str = ""
    #: Input fields every event carries.
    echo: list[str] = attrs.Factory(list)
    #: Constant fields of every successful event.
    fields: dict[str, Any] = attrs.Factory(dict)
    #: The action id of its records; default: the msg_type.
    action: str = ""
    #: The records' ``sublevel`` (``low``, ``normal``, ``high``) and ``live_default``.
    sublevel: Literal["low", "normal", "high"] = "low"
    live_default: bool = False
    #: ``always``, or ``failed``: a record only when the program did not succeed.
    record: Literal["always", "failed"] = "always"
    #: Configured values for ``"{name}"`` placeholders.
    values: dict[str, str] = attrs.Factory(dict)
    #: The program's name in the job log.
    name: str = ""
    #: Jobs of it that may run at once.
    concurrency: int = 1
    #: Requests of it that may wait.
    queue_limit: int = 1000
    #: What it does, for ``opsagent schema`` and the docs.
    description: str = ""
    #: Example inputs ``opsagent selftest`` checks.
    samples: list[dict[str, Any]] = attrs.Factory(list)


_conv = make_converter(forbid_extra_keys=True)


def _structure_argv(value: Any, _t: Any) -> list[str | ArgTable]:
    if not isinstance(value, list):
        raise ValueError(f"expected an array, got {type(value).__name__}")
    out: list[str | ArgTable] = []
    for item in value:
        out.append(item if isinstance(item, str) else _conv.structure(item, ArgTable))
    return out


_conv.register_structure_hook_func(lambda t: t == list[str | ArgTable], _structure_argv)


def _input_class(msg_type: str, fields: Mapping[str, FieldTable]) -> type:
    attributes: dict[str, Any] = {}
    # Required fields first: attrs wants no mandatory field after a defaulted one.
    for name, spec in sorted(fields.items(), key=lambda kv: not kv[1].required):
        if not name.isidentifier() or name.startswith("_"):
            raise DeclarationError(f"input.{name}: not a usable field name")
        kind = TYPES[spec.type]
        checks: list[Any] = []
        if spec.type in ("string", "strings"):
            # Refused up front (request_rejected), not when the job would run it.
            checks.append(_inert)
        if spec.pattern is not None:
            checks.append(pattern(spec.pattern, spec.what or f"a value matching {spec.pattern!r}"))
        validator: Any = None
        if checks:
            validator = checks[0] if len(checks) == 1 else attrs.validators.and_(*checks)
            if spec.type == "strings":
                validator = attrs.validators.deep_iterable(validator)
        meta = {"description": spec.description} if spec.description else {}
        if spec.required:
            attributes[name] = attrs.field(type=kind, validator=validator, metadata=meta)
        else:
            attributes[name] = attrs.field(
                type=kind | None,
                default=spec.default,
                validator=attrs.validators.optional(validator) if validator else None,
                metadata=meta,
            )
    cls = attrs.make_class(f"{msg_type}_input", attributes, frozen=True)
    return cls


def _inert(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    """A string that can be one argument of a program: no leading ``-``, no NUL, no
    control character, not too long."""
    if not isinstance(value, str):
        return
    if value.startswith("-"):
        raise FieldError(attr.name, f"must not start with '-' (an option), got {shown(value)}")
    if len(value) > MAX_ARG:
        raise FieldError(attr.name, f"at most {MAX_ARG} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise FieldError(attr.name, f"must not hold control characters, got {shown(value)}")


def _argv(items: list[str | ArgTable]) -> tuple[Any, ...]:
    out: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(item)
        elif (item.option is None) == (item.flag is None):
            raise DeclarationError(f"argv[{i}]: give exactly one of option or flag")
        elif item.option is not None:
            out.append(Option(item.option, item.field))
        else:
            assert item.flag is not None
            out.append(Flag(item.flag, item.field))
    return tuple(out)


def from_table(table: Mapping[str, Any]) -> Program:
    """The :class:`Program` a ``[[program]]`` table declares (raises
    :class:`~opsagent.capability.DeclarationError` with ``$.path`` errors)."""
    try:
        t = _structured(table)
    except InputError as exc:
        raise DeclarationError("; ".join(exc.errors)) from None
    try:
        codes = {int(k): v for k, v in t.exit_codes.items()}
    except ValueError:
        raise DeclarationError(
            f'$.exit_codes: keys are exit statuses such as "0", got {sorted(t.exit_codes)}'
        ) from None
    program = Program(
        msg_type=t.msg_type,
        input=_input_class(t.msg_type, t.input),
        argv=_argv(t.argv),
        events=t.events,
        cwd=t.cwd,
        env=tuple(t.env),
        time_limit=t.time_limit,
        time_limit_env=t.time_limit_env,
        dedup_key=t.dedup_key,
        stdin=t.stdin,
        exit_codes=codes,
        stdout=t.stdout,  # type: ignore[arg-type]
        relay=t.relay,  # type: ignore[arg-type]
        summary=t.summary,
        result=t.result,
        echo=tuple(t.echo),
        fields=t.fields,
        action=t.action,
        sublevel=t.sublevel,
        live_default=t.live_default,
        record=t.record,
        values=t.values,
        name=t.name,
        concurrency=t.concurrency,
        queue_limit=t.queue_limit,
        description=t.description,
        samples=tuple(t.samples),
        table=dict(table),
    )
    return program


def _structured(table: Mapping[str, Any]) -> ProgramTable:
    from opsagent.schema import _flatten

    try:
        return _conv.structure(dict(table), ProgramTable)
    except Exception as exc:  # noqa: BLE001 - reported as $.path lines
        errors: list[str] = []
        _flatten(exc, "$", errors)
        raise InputError(
            [
                e.replace("ForbiddenExtraKeysError: ", "").replace(
                    "Extra fields in constructor for ProgramTable", "unknown key"
                )
                for e in errors
            ]
        ) from None


def capability_of(table: Mapping[str, Any], source: str = "<config>") -> Capability:
    """The capability one ``[[program]]`` table declares, marked as from ``source``."""
    cap = from_table(table).capability()
    return attrs.evolve(cap, distribution="[[program]]", version=source, entry_point=MODULE)


def label(table: Any, index: int) -> str:
    """How a (possibly broken) table is named in reports: its msg_type, else its place."""
    if isinstance(table, Mapping) and isinstance(table.get("msg_type"), str):
        return str(table["msg_type"])
    return f"program[{index}]"


__all__ = ["MODULE", "Value", "capability_of", "from_table", "label"]
