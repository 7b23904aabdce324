"""Bytes in, an :class:`Envelope` out: guarded JSON parsing and the routing fields.

Nothing here trusts the caller: bodies are capped in size, nesting depth and the
length of number literals; NaN, Infinity, numbers that overflow to infinity (``1e999``)
and duplicate keys are refused; invalid UTF-8 and lone UTF-16 surrogates (``"\\ud800"``,
in keys too), which no UTF-8 encoder downstream can write, are refused.  Every refusal is
an :class:`EnvelopeError` with a reason a person can act on.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs

from opsagent.schema import shown

MAX_BODY = 1 << 20
MAX_DEPTH = 32
MAX_INT_DIGITS = 40
#: Longest number literal with a fraction or an exponent; a double needs 17 digits.
MAX_FLOAT_CHARS = 64
#: A caller's ``request_id`` (the job's id): never a ``/``, which the host's own records use.
REQUEST_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
#: A destination the host may reply to: ``/queue/`` or ``/topic/`` (docs/wire.md) and one
#: plain name.  Not an empty name (ActiveMQ drops the connection that sends to it, and
#: with it the frames written after: other jobs' events), not a composite (``a,b``: the
#: host would publish wherever a caller lists), not a wildcard (``*``, ``>``, ``#``), and
#: not ``/temp-queue/``: a name in a body is not translated to the caller's temporary
#: queue, so the broker would make one on the host's connection, for nobody.
REPLY_TO_PATTERN = r"/(queue|topic)/[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}"
_REPLY_TO = re.compile(REPLY_TO_PATTERN)


class EnvelopeError(ValueError):
    """A body that is not a usable request; ``errors`` are ``$.path: message`` lines."""

    def __init__(
        self,
        reason: str,
        errors: list[str] | None = None,
        *,
        msg_type: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []
        # What could still be read, so that the rejection reaches the caller.
        self.msg_type = msg_type
        self.reply_to = reply_to


@attrs.frozen
class Envelope:
    """The routing part of a request plus the whole JSON object (the capability's input)."""

    msg_type: str
    namespace: str | None
    reply_to: str | None
    request_id: str | None
    body: dict[str, Any]


def _reject_constant(name: str) -> Any:
    raise EnvelopeError(f"JSON constant {name} is not allowed")


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise EnvelopeError(f"integer of {digits} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise EnvelopeError(
            f"number of {len(text)} characters is too long (at most {MAX_FLOAT_CHARS})"
        )
    value = float(text)
    if not math.isfinite(value):
        raise EnvelopeError(f"number {text} is out of range (it would be {value})")
    return value


#: A surrogate code point on its own: what ``json`` makes of an unpaired ``\\ud800``.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The escape that can produce one; a body without it (and without a surrogate in the
#: text itself) is not walked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (or key) in ``value`` holding a lone surrogate."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"{path}: key {shown(key)}"
            step = f".{key}" if _PLAIN_KEY.fullmatch(key) else f"[{shown(key)}]"
            found = _lone_surrogate(item, path + step)
            if found is not None:
                return found
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise EnvelopeError(f"duplicate key {shown(key)} in a JSON object")
            seen.add(key)
    return obj


def _depth_ok(text: str, limit: int) -> bool:
    # Cheap upper bound: the number of opening brackets.  Only bodies that could be too
    # deep are walked character by character (strings skipped).
    if text.count("[") + text.count("{") <= limit:
        return True
    depth = 0
    in_str = False
    escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _opt_str(body: dict[str, Any], key: str, errors: list[str]) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        errors.append(f"$.{key}: expected a non-empty string, got {shown(value)}")
        return None
    return value


def parse(raw: bytes | str, *, max_body: int = MAX_BODY) -> Envelope:
    """Parse one request body; raise :class:`EnvelopeError` when it cannot be routed."""
    if len(raw) > max_body:
        raise EnvelopeError(f"body of {len(raw)} bytes is over the cap of {max_body} bytes")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"body is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if not _depth_ok(text, MAX_DEPTH):
        raise EnvelopeError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
            object_pairs_hook=_no_duplicates,
        )
    except EnvelopeError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) or (raw is text and _SURROGATE.search(text)):
        where = _lone_surrogate(body, "$")
        if where is not None:
            raise EnvelopeError(
                f"{where}: a lone UTF-16 surrogate (\\ud800-\\udfff without its pair) is "
                "not text; send the character itself or both halves of its escape"
            )
    if not isinstance(body, dict):
        raise EnvelopeError(f"body must be a JSON object, got {type(body).__name__}")
    errors: list[str] = []
    msg_type = body.get("msg_type")
    if not isinstance(msg_type, str) or not msg_type:
        errors.append(f"$.msg_type: expected a non-empty string, got {shown(msg_type)}")
    namespace = _opt_str(body, "namespace", errors)
    reply_to = _opt_str(body, "reply_to", errors)
    if reply_to is not None and not _REPLY_TO.fullmatch(reply_to):
        errors.append(
            "$.reply_to: expected a /queue/ or /topic/ destination with one name of "
            f"letters, digits, '_', '.', ':', '-' (no ',' or wildcards), got {shown(reply_to)}"
        )
        reply_to = None
    request_id = body.get("request_id")
    if request_id is not None:
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            request_id = str(request_id)
        # It becomes the job id, which capabilities may use in names: no separators.
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            errors.append(
                "$.request_id: expected 1-128 letters, digits, '_', '-', '.', ':' starting "
                f"with a letter or digit, got {shown(request_id)}"
            )
            request_id = None
    if errors:
        raise EnvelopeError(
            "; ".join(errors),
            errors,
            msg_type=msg_type if isinstance(msg_type, str) else None,
            reply_to=reply_to,
        )
    assert isinstance(msg_type, str)
    return Envelope(msg_type, namespace, reply_to, request_id, body)
