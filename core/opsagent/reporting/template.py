"""Message templates of notifications: ``{field}`` and nothing else.

A template is the operator's; the values put into it are not (a job's reason, the
identifying fields of a request anyone who can write to the queue sent).  So a template
is checked when the configuration is read -- plain field names only: no attribute
(``{x.__class__}``), index (``{x[0]}``), conversion (``{x!r}``) or format spec
(``{x:>999999}``) -- and rendered by concatenation, never by ``str.format``: a value
holding ``{...}`` stays those characters.  Each value is cut to :data:`VALUE_LIMIT`
characters and the result to :data:`TEXT_LIMIT`; a field the job does not have is empty.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping

#: Longest value put into a template (a longer one is cut, with an ellipsis).
VALUE_LIMIT = 1000
#: Longest rendered text (Mattermost takes 16,383 characters in one post).
TEXT_LIMIT = 4000
#: Longest template.
TEMPLATE_LIMIT = 4000

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")


class TemplateError(ValueError):
    """A template that is not plain ``{field}`` substitution."""


_Piece = tuple[str, str | None]


def parse(template: str) -> list[_Piece]:
    """``(literal, field or None)`` pieces of ``template``; :class:`TemplateError` if it
    is not plain substitution."""
    if len(template) > TEMPLATE_LIMIT:
        raise TemplateError(f"longer than {TEMPLATE_LIMIT} characters")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{exc} (write {{{{ and }}}} for literal braces)") from None
    out: list[_Piece] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            out.append((literal, None))
            continue
        if not _NAME.fullmatch(field):
            raise TemplateError(
                f"{{{field}}}: only plain field names such as {{job_id}} (lower case, digits "
                f"and _; no attribute or index)"
            )
        if spec or conversion:
            raise TemplateError(f"{{{field}}}: no conversion (!r) or format spec (:...)")
        out.append((literal, field))
    return out


def check_template(template: str) -> None:
    parse(template)


def cut(value: str, limit: int = VALUE_LIMIT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def render(
    template: str,
    fields: Mapping[str, str],
    escape: Callable[[str], str] = lambda text: text,
) -> str:
    """``template`` with each ``{name}`` replaced by ``escape(fields[name])`` (cut)."""
    out: list[str] = []
    for literal, field in parse(template):
        out.append(literal)
        if field is not None:
            out.append(escape(cut(fields.get(field, ""))))
    return cut("".join(out), TEXT_LIMIT)


# Markdown that would make a value something else than text in Mattermost: emphasis,
# code, links and images, headings, tables, quotes, HTML.  A backslash before ASCII
# punctuation shows the character itself (CommonMark).
_MARKDOWN = re.compile(r"([\\`*_~\[\]()#|<>!])")
# @channel, @all, @here and @user notify people: a zero-width space after the @ keeps
# the text readable and mentions nobody.
_MENTION = re.compile(r"@(?=\w)")


def no_mentions(value: str) -> str:
    """``value`` mentioning nobody (for plain-text parts such as an attachment's fallback)."""
    return _MENTION.sub("@\u200b", value)


def markdown_text(value: str) -> str:
    """``value`` as literal text in a Mattermost message: no markup, no mention, one line
    per line (a value cannot start a heading or a quote on a line of its own)."""
    value = _MARKDOWN.sub(r"\\\1", value)
    value = _MENTION.sub("@\u200b", value)
    return value.replace("\r", " ").replace("\n", " ")
