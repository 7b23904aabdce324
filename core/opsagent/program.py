"""Program capabilities: a capability whose work is one external program (a "doer").

The old agent's doer pattern -- validate, run a program under a time limit, turn its exit
status and output into one event and one action record -- declared in a few lines::

    Program(
        msg_type="catalog_import",
        input=CatalogImportIn,
        argv=("{python}", "scripts/pcs-catalog-import.py", arg("source")),
        cwd="{monitor_root}",
        config=EpicprodConfig,
        time_limit=1800,
        time_limit_env="EPICPROD_CATALOG_IMPORT_TIMEOUT",
        dedup_key="catalog_import:{source}",
        events={"ok": "catalog_import_ready", "error": "catalog_import_ready"},
        echo=("source",),
        summary="last_line",
    ).capability()

:meth:`Program.capability` compiles it to an ordinary :class:`~opsagent.Capability`, so
dispatch, dedup, the journal, time limits, process isolation, events and ``allow_users``
apply unchanged.  The rules:

- argv is a tuple whose elements are each a literal, or exactly one placeholder
  (``"{name}"`` or :func:`arg`), or an :func:`option` / :func:`flag`.  A placeholder
  names a validated input field (or a property of the input class), or a configured
  value (a field of ``config``, the capability's ``[capability.<msg_type>]`` section,
  or of ``values``).  Text is never glued into one argument and no shell is involved.
- :func:`option` ``("--only", "only")`` gives ``--only a --only b`` for a list,
  ``--only a`` for a value, nothing for ``None``/empty; :func:`flag` gives the flag when
  the field is true.  A value that starts with ``-``, holds a NUL or is longer than
  :data:`MAX_ARG` characters never reaches a program: the job ends ``error`` naming
  the field (declare patterns on the input class to refuse such values up front).
- The program's exit: ``exit_codes`` maps codes to outcomes (default ``{0: "ok"}``);
  any other code is ``error``; a signal is ``killed by signal SIGTERM``; the time limit
  is ``timed out after <T>s`` (the whole process group is killed, grandchildren too).
  The reason of a failure is the old agent's rule: the last standard-error line
  containing ``ERROR``, ``CRITICAL``, ``FATAL``, ``Error:`` or ``Exception``, else the
  last standard-error line, else ``rc=N``.
- ``stdout`` is the program's protocol: ``text`` (nothing read), ``last_json`` (the last
  line is a JSON document), ``json_list`` (the last line is a JSON list),
  ``summary_line`` (a line ``SUMMARY {json}``), ``skipped_prefix`` (standard output
  starting with ``SKIPPED`` makes the outcome ``skipped``).  The parsed value is put in
  the event under ``result`` (a field name) and handed to ``event``.
- ``relay``: the program's output goes to the job log line by line (``lines``, bounded
  to :data:`RELAY_LINES` lines), only when the job failed (``on_failure``), or not
  at all (``none``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import string
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from opsagent.capability import Capability, DeclarationError
from opsagent.checks import Check
from opsagent.job import Job
from opsagent.outcome import STATUSES, Notice, Outcome
from opsagent.schema import unstructure

# Through the export surface (the bounded runner is re-exported there before this
# module is imported): a contract module names no host module.
from opsagent import Completed, run  # noqa: E402  isort: skip

Protocol = Literal["text", "last_json", "json_list", "summary_line", "skipped_prefix"]
Relay = Literal["lines", "on_failure", "none"]
PROTOCOLS = ("text", "last_json", "json_list", "summary_line", "skipped_prefix")
RELAYS = ("lines", "on_failure", "none")
SUMMARIES = ("", "last_line", "all", "first_line")

#: The longest value passed as one argument.
MAX_ARG = 4096
#: Lines of a program's output relayed to the job log, and the longest shown whole.
RELAY_LINES = 500
RELAY_LINE_CHARS = 1000
#: Seconds the host waits past the time limit before killing the job itself (the job
#: kills its program at the limit, gives it ``KILL_GRACE`` to go, and reports).
BACKSTOP = 15.0
KILL_GRACE = 5.0

_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_REASON_TOKENS = ("ERROR", "CRITICAL", "FATAL", "Error:", "Exception")


# -- argv elements ------------------------------------------------------------------------


@attrs.frozen
class Value:
    """One argument: the value of a field or configured value (``"{name}"`` says the same)."""

    name: str
    #: A configured value used when the field is absent (``None`` or empty).
    otherwise: str = ""


@attrs.frozen
class Option:
    """``flag value`` per value: repeated for a list, left out for ``None`` or empty."""

    flag: str
    name: str
    #: A configured value used when the field is absent (``None`` or empty).
    otherwise: str = ""


@attrs.frozen
class Flag:
    """``flag`` alone when the field is true."""

    flag: str
    name: str


def arg(name: str, otherwise: str = "") -> Value:
    """An argument that is the value of ``name`` (an input field or a configured value);
    ``otherwise`` names a configured value for when the field is absent."""
    return Value(name, otherwise)


def option(flag: str, name: str, otherwise: str = "") -> Option:
    """``flag <value>`` for the field ``name``: repeated for a list, omitted when absent
    (unless ``otherwise`` names a configured value to use then)."""
    return Option(flag, name, otherwise)


def flag(flag: str, name: str) -> Flag:
    """``flag`` when the boolean field ``name`` is true."""
    return Flag(flag, name)


Element = str | Value | Option | Flag


def _element(item: Any, where: str) -> Element:
    if isinstance(item, Value | Option | Flag):
        if isinstance(item, Option | Flag) and not (
            isinstance(item.flag, str) and item.flag.startswith("-") and "{" not in item.flag
        ):
            raise DeclarationError(f"{where}: the flag {item.flag!r} must be a literal '-...'")
        return item
    if not isinstance(item, str):
        raise DeclarationError(
            f"{where}: expected a string, arg(), option() or flag(), got {item!r}"
        )
    found = _PLACEHOLDER.match(item)
    if found:
        return Value(found.group(1))
    if "{" in item or "}" in item:
        raise DeclarationError(
            f"{where}: {item!r} mixes text and a placeholder; an argument is either a "
            f"literal or exactly one placeholder such as '{{source}}' (no concatenation)"
        )
    if "\0" in item:
        raise DeclarationError(f"{where}: a NUL cannot be passed to a program")
    return item


def _names(elements: Iterable[Element]) -> list[str]:
    return [e.name for e in elements if not isinstance(e, str)]


# -- what the program said ------------------------------------------------------------------


@attrs.frozen
class Result:
    """How one run of the program ended, for ``event`` functions and tests."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    duration: float
    #: The parsed standard output (``last_json``, ``json_list``, ``summary_line``).
    parsed: Any = None


def derive_reason(returncode: int, stderr: str) -> str:
    """The old agent's failure reason: a signal's name; else the last standard-error
    line naming an error; else the last line; else ``rc=N``."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    text = stderr.strip()
    if not text:
        return f"rc={returncode}"
    lines = text.splitlines()
    for line in reversed(lines):
        if any(tok in line for tok in _REASON_TOKENS):
            return line.strip()
    return lines[-1].strip()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def parse_stdout(protocol: str, stdout: str) -> tuple[Any, str | None]:
    """``(parsed value, problem)`` of ``stdout`` under ``protocol``; ``problem`` says
    why the output does not follow it (``None``: it does)."""
    if protocol in ("text", "skipped_prefix"):
        return None, None
    if protocol == "summary_line":
        for line in reversed(stdout.splitlines()):
            if line.startswith("SUMMARY "):
                try:
                    return json.loads(line[len("SUMMARY ") :]), None
                except ValueError as exc:
                    return None, f"its SUMMARY line is not JSON ({exc})"
        return None, None
    last = _last_line(stdout)
    if not last:
        return None, "it printed nothing on standard output (a JSON line was expected)"
    try:
        value = json.loads(last)
    except ValueError:
        return None, f"its last line of output is not JSON: {last[:200]!r}"
    if protocol == "json_list" and not isinstance(value, list):
        return None, f"its last line of output is not a JSON list: {last[:200]!r}"
    return value, None


# -- the declaration -------------------------------------------------------------------------


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


def _codes(value: Mapping[Any, str]) -> dict[int, str]:
    return {int(k): v for k, v in dict(value).items()}


def _check_codes(_inst: object, _attr: attrs.Attribute, value: Mapping[int, str]) -> None:
    for code, status in value.items():
        if status not in STATUSES:
            raise DeclarationError(
                f"exit_codes[{code}]: unknown outcome {status!r}; known: {sorted(STATUSES)}"
            )
        if not 0 <= code <= 255:
            raise DeclarationError(f"exit_codes: {code} is not an exit status (0-255)")


@attrs.frozen(kw_only=True)
class Program:
    """A capability whose work is one program; :meth:`capability` compiles it.

    ``event(inp, result, outcome)`` (Python declarations only) returns extra event
    fields, or an :class:`~opsagent.Outcome` to end the job with instead; ``echo`` names
    input fields every event carries (``None`` when absent); ``fields`` are constant
    fields of every successful event (``{"error": ""}`` for a reader that expects the
    key); ``summary`` puts standard output in a successful event's ``summary``
    (``last_line``, ``first_line`` or ``all``, stripped); ``result`` names the event
    field that gets the parsed standard output.  ``stdin`` names an input field whose
    value is written to the program as JSON.  ``values`` are configured values given
    in the declaration itself (a ``[[program]]`` table's ``values``).
    """

    msg_type: str
    input: type
    argv: tuple[Element, ...] = attrs.field(converter=_tuple)
    events: Mapping[str, str]
    cwd: str | None = None
    env: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    time_limit: float = 60.0
    time_limit_env: str = ""
    dedup_key: str | None = None
    stdin: str | None = None
    exit_codes: Mapping[int, str] = attrs.field(
        factory=lambda: {0: "ok"}, converter=_codes, validator=_check_codes
    )
    stdout: Protocol = attrs.field(default="text", validator=attrs.validators.in_(PROTOCOLS))
    relay: Relay = attrs.field(default="lines", validator=attrs.validators.in_(RELAYS))
    summary: str = attrs.field(default="", validator=attrs.validators.in_(SUMMARIES))
    result: str = ""
    echo: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_dict)
    event: Callable[..., Any] | None = None
    #: ``notice(inp, outcome)`` (Python declarations only): the Capcom notice(s) the host
    #: posts to the monitor for this end (:class:`~opsagent.Notice`, a list, or
    #: ``None``); called for every outcome, a time-out or a refused argv too.
    notice: Callable[[Any, Outcome], Any] | None = None
    #: ``Capability.quiet``: ``quiet(inp, outcome)`` true keeps this end's event and
    #: action record in (a periodic capture that captured nothing).
    quiet: Callable[[Any, Outcome], bool] | None = None
    action: str = ""
    #: The action record's subject (``Capability.subject_type``; ``subject_key``: the
    #: input field that names it), ``sublevel`` and ``live_default``, as the old agent's.
    subject_type: str = ""
    subject_key: str = ""
    sublevel: str = "low"
    live_default: bool = False
    #: ``Capability.record``: ``always``, or ``failed`` (an action record only when the
    #: program did not succeed).
    record: str = "always"
    config: type | None = None
    #: The shared table ``config`` is read from first (``[epicprod]``), see Capability.
    config_section: str = ""
    values: Mapping[str, str] = attrs.field(factory=dict, converter=_dict)
    #: Seconds after an accepted start during which a new request ends ``skipped`` at once
    #: (its event says why) instead of running the program again; ``cooldown_env`` names
    #: the old agent's variable that sets it on this host.
    cooldown: float = 0.0
    cooldown_env: str = ""
    #: The name of the program in the job log (``pcs-catalog-import``); default: msg_type.
    name: str = ""
    credentials: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    concurrency: int = 1
    queue_limit: int = 1000
    memory_limit: int | None = None
    description: str = ""
    samples: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_tuple)
    #: The ``[[program]]`` table this was read from (``None``: declared in Python).
    table: Mapping[str, Any] | None = None

    def __attrs_post_init__(self) -> None:
        if not (isinstance(self.input, type) and attrs.has(self.input)):
            raise DeclarationError(f"input: expected an attrs class, got {self.input!r}")
        if not self.argv:
            raise DeclarationError("argv: empty; the first element is the program")
        elements = tuple(_element(item, f"argv[{i}]") for i, item in enumerate(self.argv))
        object.__setattr__(self, "argv", elements)
        if not isinstance(elements[0], str | Value):
            raise DeclarationError("argv[0]: the program is a path or one placeholder")
        inputs, configured = self._input_names(), self._configured_names()
        both = sorted(inputs & configured)
        if both:
            raise DeclarationError(
                f"{', '.join(both)}: both an input field and a configured value; rename one"
            )
        known = inputs | configured
        for i, e in enumerate(elements):
            if not isinstance(e, str) and e.name not in known:
                raise DeclarationError(self._unknown(f"argv[{i}]", e.name, inputs, configured))
            if isinstance(e, Option | Flag) and e.name in configured:
                raise DeclarationError(
                    f"argv[{i}]: {e.flag} takes an input field, not the configured {e.name!r}"
                )
            otherwise = getattr(e, "otherwise", "")
            if otherwise and otherwise not in configured:
                raise DeclarationError(
                    f"argv[{i}]: otherwise={otherwise!r} is not a configured value; "
                    f"known: {sorted(configured)}"
                )
        if self.cwd is not None:
            cwd = _element(self.cwd, "cwd")
            if isinstance(cwd, Value) and cwd.name not in configured:
                raise DeclarationError(
                    f"cwd: {{{cwd.name}}} is not a configured value (the working directory "
                    f"never comes from a request); known: {sorted(configured)}"
                )
        if self.dedup_key is not None:
            for name in _template_names(self.dedup_key, "dedup_key"):
                if name not in known:
                    raise DeclarationError(self._unknown("dedup_key", name, inputs, configured))
        for label, names in (("echo", self.echo), ("stdin", (self.stdin,) if self.stdin else ())):
            for name in names:
                if name not in inputs:
                    raise DeclarationError(
                        f"{label}: {name!r} is not a field of {self.input.__name__}"
                    )
        if self.result and self.stdout in ("text", "skipped_prefix"):
            raise DeclarationError(f"result: stdout {self.stdout!r} parses nothing to put there")
        if self.event is not None and not callable(self.event):
            raise DeclarationError(f"event: expected a function, got {self.event!r}")
        # What only the compiled capability checks (events, limits...) is refused now.
        self.capability()

    # -- names ------------------------------------------------------------------------------

    def _input_names(self) -> set[str]:
        names = {f.name for f in attrs.fields(self.input)}
        names |= {n for n, v in vars(self.input).items() if isinstance(v, property) and n[0] != "_"}
        return names

    def _configured_names(self) -> set[str]:
        names = set(self.values)
        if self.config is not None:
            names |= {f.name for f in attrs.fields(self.config)}
        return names

    def _unknown(self, where: str, name: str, inputs: set[str], configured: set[str]) -> str:
        return (
            f"{where}: {{{name}}} is neither a field of {self.input.__name__} "
            f"({', '.join(sorted(inputs)) or 'none'}) nor a configured value "
            f"({', '.join(sorted(configured)) or 'none'})"
        )

    @property
    def label(self) -> str:
        return self.name or self.msg_type

    def command(self) -> str:
        """The argv as a person reads it: ``{python} scripts/x.py {source} [--only {only}]...``."""
        words = []
        for e in self.argv:
            if isinstance(e, str):
                words.append(e)
            elif isinstance(e, Value):
                words.append(f"{{{e.name}}}")
            elif isinstance(e, Option):
                words.append(f"[{e.flag} {{{e.name}}}]")
            else:
                words.append(f"[{e.flag}]")
        return " ".join(words)

    # -- compiling -----------------------------------------------------------------------------

    def capability(self) -> Capability:
        """The ordinary capability that runs this program."""
        space, key = _split_key(self.dedup_key)
        return Capability(
            msg_type=self.msg_type,
            input=self.input,
            doer=ProgramDoer(self),
            events=self.events,
            time_limit=self.time_limit,
            time_limit_env=self.time_limit_env,
            backstop=BACKSTOP,
            credentials=self.credentials,
            dedup_key=None if key is None else _KeyOf(self, key),
            dedup_space=space,
            action=self.action,
            subject_type=self.subject_type,
            subject_key=_FieldOf(self.subject_key) if self.subject_key else None,
            sublevel=self.sublevel,
            live_default=self.live_default,
            record=self.record,
            quiet=self.quiet,
            echo=_EchoOf(self.echo) if self.echo else None,
            concurrency=self.concurrency,
            queue_limit=self.queue_limit,
            memory_limit=self.memory_limit,
            config=self.config,
            config_section=self.config_section,
            env_allow=(*self.env, *((self.cooldown_env,) if self.cooldown_env else ())),
            checks=ProgramChecks(self),
            description=self.description
            or f"Runs `{self.command()}`" + (f" in `{self.cwd}`." if self.cwd else "."),
            samples=self.samples,
        )

    # -- at run time ----------------------------------------------------------------------------

    def lookup(self, name: str, inp: Any, job: Job | None) -> Any:
        if name in self.values:
            return self.values[name]
        if self.config is not None and any(f.name == name for f in attrs.fields(self.config)):
            if job is None or job.config is None:
                return attrs.fields_dict(self.config)[name].default
            return getattr(job.config, name)
        return getattr(inp, name)

    def argv_of(self, inp: Any, job: Job | None) -> list[str]:
        """The argv for one validated input (raises :class:`ArgumentRefused`)."""
        out: list[str] = []
        for e in self.argv:
            if isinstance(e, str):
                out.append(e)
            elif isinstance(e, Value):
                value = self.lookup(e.name, inp, job)
                if (value is None or value == "") and e.otherwise:
                    value = self.lookup(e.otherwise, inp, job)
                    out.append(_argument(e.otherwise, value, configured=True))
                    continue
                if value is None:
                    raise ArgumentRefused(f"$.{e.name}: required to run {self.label}")
                out.append(_argument(e.name, value, configured=e.name in self._configured_names()))
            elif isinstance(e, Option):
                value = self.lookup(e.name, inp, job)
                if (value is None or value == "" or value == []) and e.otherwise:
                    configured = self.lookup(e.otherwise, inp, job)
                    out += [e.flag, _argument(e.otherwise, configured, configured=True)]
                    continue
                items = value if isinstance(value, list | tuple) else [value]
                for item in items:
                    if item is None or item == "":
                        continue
                    out += [e.flag, _argument(e.name, item)]
            else:
                if self.lookup(e.name, inp, job) is True:
                    out.append(e.flag)
        return out

    def cwd_of(self, inp: Any, job: Job | None) -> str | None:
        if self.cwd is None:
            return None
        element = _element(self.cwd, "cwd")
        return element if isinstance(element, str) else str(self.lookup(element.name, inp, job))

    def key_of(self, template: str, inp: Any) -> str:
        return string.Formatter().vformat(template, (), _Fields(self, inp))


class ArgumentRefused(ValueError):
    """A value that must not reach a program's argv (it starts with '-', holds a NUL...)."""


def _argument(name: str, value: Any, *, configured: bool = False) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = str(value)
    else:
        raise ArgumentRefused(
            f"$.{name}: a {type(value).__name__} cannot be one argument; declare a property "
            f"of the input class that renders it"
        )
    if "\0" in text:
        raise ArgumentRefused(f"$.{name}: holds a NUL, which cannot be passed to a program")
    if len(text) > MAX_ARG:
        raise ArgumentRefused(f"$.{name}: {len(text)} characters, more than {MAX_ARG}")
    if not configured and text.startswith("-"):
        raise ArgumentRefused(
            f"$.{name}: starts with '-', which the program would read as an option; refused"
        )
    return text


def _template_names(template: str, where: str) -> list[str]:
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DeclarationError(f"{where}: {template!r} is not a template: {exc}") from None
    for _text, name, spec, conv in parsed:
        if name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or spec or conv:
            raise DeclarationError(f"{where}: {{{name}}} must be a plain field name")
        names.append(name)
    return names


def _split_key(template: str | None) -> tuple[str, str | None]:
    """``catalog_import:{source}`` -> space ``catalog_import``, key ``{source}``, so the
    host's key is the old agent's exactly."""
    if template is None:
        return "", None
    head, sep, rest = template.partition(":")
    if sep and re.fullmatch(r"[a-z][a-z0-9_]{0,63}", head) and rest:
        return head, rest
    return "", template


class _Fields(dict):  # type: ignore[type-arg]
    def __init__(self, program: Program, inp: Any) -> None:
        super().__init__()
        self.program, self.inp = program, inp

    def __missing__(self, name: str) -> str:
        value = self.program.lookup(name, self.inp, None)
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return "" if value is None else str(value)


@attrs.frozen
class _KeyOf:
    program: Program
    template: str

    def __call__(self, inp: Any) -> str:
        return self.program.key_of(self.template, inp)


@attrs.frozen
class _EchoOf:
    names: tuple[str, ...]

    def __call__(self, inp: Any) -> dict[str, Any]:
        return {n: getattr(inp, n) for n in self.names}


@attrs.frozen
class _FieldOf:
    name: str

    def __call__(self, inp: Any) -> Any:
        return getattr(inp, self.name, None)


# -- the doer --------------------------------------------------------------------------------


@attrs.frozen
class ProgramDoer:
    """Runs the program of one :class:`Program` and turns how it ended into an Outcome."""

    program: Program

    def __call__(self, inp: Any, job: Job) -> Outcome:
        outcome = self._run(inp, job)
        notice = self.program.notice
        if notice is None:
            return outcome
        try:
            made = notice(inp, outcome)
        except Exception as exc:  # noqa: BLE001 - a notice is never worth the job's outcome
            job.log.warning("{}: no Capcom notice: {!r}", self.program.label, exc)
            return outcome
        if made is None:
            return outcome
        made = (made,) if isinstance(made, Notice) else tuple(made)
        return attrs.evolve(outcome, notices=(*outcome.notices, *made))

    def _run(self, inp: Any, job: Job) -> Outcome:
        p = self.program
        try:
            argv = p.argv_of(inp, job)
        except ArgumentRefused as exc:
            return Outcome.error(f"refused to run {p.label}: {exc}")
        cooling = _cooling(p, job)
        if cooling is not None:
            return cooling
        cwd = p.cwd_of(inp, job)
        if cwd is not None and not os.path.isdir(cwd):
            where = f" (the configured {p.cwd})" if p.cwd != cwd else ""
            return Outcome.error(
                f"{p.label} not run: its working directory {cwd!r}{where} is not a directory; "
                f"fix the configuration (opsagent selftest checks it)"
            )
        stdin = None
        if p.stdin:
            stdin = json.dumps(_plain(getattr(inp, p.stdin))).encode()
        relay = _Relay(job, p.label) if p.relay == "lines" else None
        job.log.info("running {}", " ".join(argv))
        try:
            done = run(
                argv,
                env=job.env,
                cwd=cwd,
                timeout=job.time_limit,
                grace=KILL_GRACE,
                stdin_data=stdin,
                split_stderr=True,
                on_line=relay,
            )
        except OSError as exc:
            return Outcome.error(f"{p.label} could not be started: {exc.strerror or exc}")
        result = _result(p, done)
        outcome = self.outcome(inp, result, job.time_limit)
        if p.relay == "on_failure" and not outcome.succeeded:
            on_failure = _Relay(job, p.label)
            for line in (done.output + done.stderr).splitlines():
                on_failure(line)
        return outcome

    def outcome(self, inp: Any, result: Result, time_limit: float) -> Outcome:
        """The outcome of one run (what :meth:`__call__` returns after running)."""
        p = self.program
        if result.timed_out:
            return Outcome.timeout(f"timed out after {time_limit:g}s")
        status = p.exit_codes.get(result.returncode, "error") if result.returncode >= 0 else "error"
        if (
            status == "ok"
            and p.stdout == "skipped_prefix"
            and result.stdout.strip().startswith("SKIPPED")
        ):
            return Outcome.skipped(_last_line(result.stdout.strip().splitlines()[0]))
        data: dict[str, Any] = {}
        problem = None
        if p.stdout not in ("text", "skipped_prefix"):
            parsed, problem = parse_stdout(p.stdout, result.stdout)
            result = attrs.evolve(result, parsed=parsed)
            if p.result and parsed is not None:
                data[p.result] = parsed
        # A program that says it succeeded but broke its protocol did not succeed; one
        # that reports a warning or a failure is believed, parsed value or not.
        if status in ("ok", "skipped") and problem is not None:
            return Outcome.error(f"{p.label} broke its output protocol: {problem}", **data)
        if status == "ok":
            data = {**p.fields, **data}
            if p.summary:
                data["summary"] = _summary(p.summary, result.stdout)
            outcome = Outcome("ok", None, data)
        else:
            outcome = Outcome(status, derive_reason(result.returncode, result.stderr), data)
        if p.event is not None:
            extra = p.event(inp, result, outcome)
            if isinstance(extra, Outcome):
                return extra
            if extra:
                outcome = attrs.evolve(outcome, data={**outcome.data, **extra})
        return outcome


def _cooling(p: Program, job: Job) -> Outcome | None:
    """``skipped`` while the program's cooldown runs; else note this start and ``None``."""
    interval = p.cooldown
    raw = job.env.get(p.cooldown_env, "").strip() if p.cooldown_env else ""
    if raw:
        try:
            interval = float(raw)
        except ValueError:
            job.log.warning(
                "{}={!r} is not a number of seconds; using {:g}", p.cooldown_env, raw, interval
            )
    if interval <= 0:
        return None
    stamp = _stamp_path(job)
    if stamp is None:
        return None
    now = time.time()
    try:
        last = float(stamp.read_text().strip() or "nan")
    except (OSError, ValueError):
        last = float("nan")
    if 0 <= now - last < interval:
        return Outcome.skipped(
            f"cooldown: the previous {p.msg_type} started {now - last:.0f}s ago, less than "
            f"{interval:g}s (" + (p.cooldown_env or "cooldown") + "); nothing was run"
        )
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{now}\n")
    os.replace(tmp, stamp)
    return None


def _stamp_path(job: Job) -> Path | None:
    """``<cache>/.opsagent-cooldown/<msg_type>``, in a directory this user made and owns
    (another member of the group could otherwise point it elsewhere): None when not."""
    where = job.cache_dir / ".opsagent-cooldown"
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(where)
    except OSError as exc:
        job.log.warning("no cooldown record: {}", exc)
        return None
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        job.log.warning("no cooldown record: {} is not a private directory of this user", where)
        return None
    return where / job.msg_type


def _summary(how: str, stdout: str) -> str:
    lines = stdout.strip().splitlines()
    if how == "all":
        return stdout.strip()
    if how == "first_line":
        return lines[0] if lines else ""
    return lines[-1] if lines else ""


def _plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return unstructure(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _result(p: Program, done: Completed) -> Result:
    return Result(
        argv=done.argv,
        returncode=done.returncode,
        stdout=done.output,
        stderr=done.stderr,
        timed_out=done.timed_out or done.cancelled,
        duration=done.duration,
    )


class _Relay:
    """Each line to the job log as the old agent did (``  <program>: <line>``), bounded."""

    def __init__(self, job: Job, label: str) -> None:
        self.job, self.label, self.count = job, label, 0

    def __call__(self, line: str) -> None:
        self.count += 1
        if self.count > RELAY_LINES:
            if self.count == RELAY_LINES + 1:
                self.job.log.info("  {}: [further output not relayed]", self.label)
            return
        text = line.rstrip("\n")
        if len(text) > RELAY_LINE_CHARS:
            text = text[:RELAY_LINE_CHARS] + f" [... {len(text) - RELAY_LINE_CHARS} more]"
        self.job.log.info("  {}: {}", self.label, text)


# -- selftest ---------------------------------------------------------------------------------


@attrs.frozen
class ProgramChecks:
    """``opsagent selftest``: is the program there and executable, is the working
    directory there."""

    program: Program

    def __call__(self, job: Job) -> list[Check]:
        p = self.program
        out: list[Check] = []
        cwd = p.cwd_of(None, job)
        if cwd is not None:
            if Path(cwd).is_dir():
                out.append(Check.ok("working directory", cwd))
            else:
                out.append(Check.fail("working directory", f"{cwd} is not a directory"))
        first = p.argv[0]
        program = first if isinstance(first, str) else str(p.lookup(first.name, None, job))
        out.append(_executable(program, job.env, cwd))
        # A script run by an interpreter (argv[1] a path literal): is it there?
        if len(p.argv) > 1 and isinstance(p.argv[1], str) and p.argv[1].endswith(".py"):
            script = Path(cwd or ".") / p.argv[1]
            if script.is_file():
                out.append(Check.ok("script", str(script)))
            else:
                out.append(Check.fail("script", f"{script} is not a file"))
        return out


def _executable(program: str, env: Mapping[str, str], cwd: str | None) -> Check:
    import shutil

    name = f"program {program}"
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else Path(cwd or ".") / program
        if path.is_file() and os.access(path, os.X_OK):
            return Check.ok(name, str(path))
        return Check.fail(name, f"{path} is not an executable file")
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found:
        return Check.ok(name, found)
    return Check.fail(name, f"not found on the jobs' PATH ({env.get('PATH', os.defpath)})")
