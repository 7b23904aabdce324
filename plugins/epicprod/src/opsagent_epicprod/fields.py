"""The input fields the epicprod message types share, with the patterns that keep a
request's values inert as one argument of a doer (none starts with ``-``, none holds a
control character)."""

from __future__ import annotations

from typing import Any

import attrs
from opsagent import FieldError, pattern, shown

#: A monitor user name or a chain's name (Django: letters, digits and @ . + - _).
USER = r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,149}"
#: A catalogue task name (as submit_task).
TASK_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}"
#: A system name of the status page, a refresh source.
NAME = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}"
#: An id of the assessment harness (a number or a UUID-like token).
IDENT = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
#: A status word of the assessment harness.
WORD = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}"

user = pattern(USER, "a user name (letters, digits and @ . + - _, not starting with -)")
task_name = pattern(TASK_NAME, "a catalogue task name")
name = pattern(NAME, "a name (letters, digits and _ . : -, not starting with -)")


def created_by() -> Any:
    """The optional ``created_by`` every nightly doer records as its user."""
    return attrs.field(
        default=None,
        validator=attrs.validators.optional(user),
        metadata={"description": "who asked (recorded by the doer)"},
    )


def names(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
    """A name, or a list of names (``refresh_system_status``'s ``only``/``selected``)."""
    if value is None:
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise FieldError(attr.name, f"expected a name or a list of names, got {shown(value)}")
    if len(items) > 100:
        raise FieldError(attr.name, f"at most 100 names, got {len(items)}")
    for v in items:
        name(_inst, attr, v)


def ident(required: bool) -> Any:
    """An id that arrives as a string or a number; kept as sent, rendered with ``str()``."""

    def check(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if value is None and not required:
            return
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise FieldError(
                attr.name, f"expected an id (a string or a number), got {shown(value)}"
            )
        if isinstance(value, int) and value < 0:
            raise FieldError(attr.name, f"expected a non-negative id, got {value}")
        pattern(IDENT, "an id (letters, digits and _ . : -)")(_inst, attr, str(value))

    meta = {"description": "an id: a string or a number"}
    if required:
        return attrs.field(validator=check, metadata=meta)
    return attrs.field(default=None, validator=check, metadata=meta)
