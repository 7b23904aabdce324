"""A package declaring a program capability, for tests/programs/test_program_config.py:
the same declaration as that test's ``[[program]]`` table, as Python."""

from __future__ import annotations

import attrs
from opsagent import Program, flag, hookimpl, option, pattern


@attrs.frozen
class ReportIn:
    subject: str = attrs.field(validator=pattern(r"[a-z][a-z0-9_]{0,40}", "a subject"))
    tags: list[str] | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            attrs.validators.deep_iterable(pattern(r"[a-z0-9][a-z0-9 ]{0,40}", "a tag"))
        ),
    )
    verbose: bool | None = None


@attrs.frozen
class Where:
    """``[capability.t_pkg_report]``: the doer and its checkout."""

    python: str = ""
    root: str = ""


REPORT = Program(
    msg_type="t_pkg_report",
    input=ReportIn,
    argv=("{python}", "report.py", "{subject}", option("--tag", "tags"),
          flag("--verbose", "verbose")),
    cwd="{root}",
    config=Where,
    events={"ok": "t_report_ready", "error": "t_report_ready"},
    time_limit=20,
    dedup_key="t_report:{subject}",
    exit_codes={0: "ok", 3: "warning"},
    stdout="last_json",
    result="report",
    echo=("subject",),
    action="t_report",
    name="report",
)


@hookimpl
def register_capabilities(register):
    register(REPORT.capability())
