"""Input schemas: a strict cattrs converter, field types of this field, JSON Schema export.

Capability inputs are attrs classes.  The converter here never coerces: a list is not
a string, ``"12"`` is not an int, ``true`` is not ``1``.  Ids that arrive as strings from
some callers and integers from others are typed :data:`Digits` and come out as strings.
Errors are reported with a JSON path: ``$.pandaid: expected digits, got '../../x'``.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, NewType
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, IterableValidationNote

#: A non-negative integer id that may arrive as a JSON string or number; kept as a string.
Digits = NewType("Digits", str)

_DIGITS = re.compile(r"[0-9]{1,20}")
MAX_REPR = 60


def shown(value: Any) -> str:
    """A short, safe rendering of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


class FieldError(ValueError):
    """Raised by field validators so the error names the field (``$.<field>: ...``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InputError(ValueError):
    """Input that does not fit a schema; ``errors`` is a list of ``$.path: message`` lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _strict_str(value: Any, _t: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_json_type(value)} {shown(value)}")
    return value


def _strict_int(value: Any, _t: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_json_type(value)} {shown(value)}")
    return value


def _strict_float(value: Any, _t: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_json_type(value)} {shown(value)}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {shown(value)}")
    return float(value)


def _strict_bool(value: Any, _t: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_json_type(value)} {shown(value)}")
    return value


def _digits(value: Any, _t: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**20:
        return str(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return value
    raise ValueError(f"expected digits, got {shown(value)}")


def _strict_list(value: Any, t: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected an array, got {_json_type(value)} {shown(value)}")
    return value


def make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """The converter every capability input goes through; extra keys are ignored.

    Configuration uses the same strict rules but refuses unknown keys.
    """
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=forbid_extra_keys)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(Digits, _digits)
    conv.register_structure_hook_func(
        lambda t: typing.get_origin(t) in (list, tuple) or t in (list, tuple),
        _make_seq_hook(conv),
    )
    conv.register_structure_hook_factory(attrs.has, lambda cls: _every_fault_hook(conv, cls))
    return conv


def _make_seq_hook(conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    def hook(value: Any, t: Any) -> Any:
        _strict_list(value, t)
        args = typing.get_args(t)
        item_t = args[0] if args else Any
        out = []
        errors: list[Exception] = []
        for i, item in enumerate(value):
            try:
                out.append(item if item_t is Any else conv.structure(item, item_t))
            except Exception as exc:  # noqa: BLE001 - collected and re-raised as a group
                exc.__notes__ = [
                    *getattr(exc, "__notes__", []),
                    IterableValidationNote(f"Structuring {t} @ index {i}", i, item_t),
                ]
                errors.append(exc)
        if errors:
            raise cattrs.IterableValidationError(f"While structuring {t!r}", errors, t)
        origin = typing.get_origin(t) or t
        return tuple(out) if origin is tuple else out

    return hook


def _every_fault_hook(conv: cattrs.Converter, cls: type) -> Callable[[Any, Any], Any]:
    """cattrs' own hook for ``cls``, made to report every field's fault at once.

    cattrs stops before the class is made when a field has the wrong type, and attrs
    stops at the first validator that fails; either way the other fields' faults would
    go unreported.  On failure the validators of every field that did structure are run
    one by one, each fault noted with its field's name.
    """
    base: Callable[[Any, Any], Any] = conv.gen_structure_attrs_fromdict(cls)

    def hook(obj: Any, t: Any) -> Any:
        try:
            return base(obj, t)
        except cattrs.ClassValidationError as exc:
            noted = {n.name for e in exc.exceptions for n in _attribute_notes(e)}
            found = _validator_faults(conv, cls, obj, skip=noted)
            if not found:
                raise
            # A validator error raised while making the class is one of those found again.
            kept = [
                e
                for e in exc.exceptions
                if _attribute_notes(e) or isinstance(e, cattrs.ForbiddenExtraKeysError)
            ]
            order = {f.name: i for i, f in enumerate(attrs.fields(cls))}
            faults = sorted(kept + found, key=lambda e: order.get(_field_of(e), len(order)))
            raise cattrs.ClassValidationError(exc.message, faults, cls) from None

    return hook


def _attribute_notes(exc: BaseException) -> list[AttributeValidationNote]:
    return [n for n in getattr(exc, "__notes__", []) if isinstance(n, AttributeValidationNote)]


def _field_of(exc: BaseException) -> str:
    if isinstance(exc, FieldError):
        return exc.field
    notes = _attribute_notes(exc)
    if not notes and isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _field_of(exc.exceptions[0])
    return notes[-1].name if notes else ""


def _validator_faults(
    conv: cattrs.Converter, cls: type, obj: Any, skip: set[str]
) -> list[Exception]:
    """Each field's validator run on its own (fields in ``skip`` already failed)."""
    if not isinstance(obj, dict):
        return []
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: use the raw ones
        hints = {}
    values: dict[str, Any] = {}
    faults: list[Exception] = []
    for f in attrs.fields(cls):
        if not f.init or f.name in skip:
            continue
        if f.name in obj:
            t = hints.get(f.name, f.type)
            try:
                value = obj[f.name] if t is None else conv.structure(obj[f.name], t)
            except Exception:  # noqa: BLE001 - reported by cattrs already
                continue
        elif f.default is attrs.NOTHING:
            continue
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            if f.default.takes_self:  # type: ignore[attr-defined]
                continue
            value = f.default.factory()  # type: ignore[attr-defined]
        else:
            value = f.default
        if callable(f.converter) and not isinstance(f.converter, attrs.Converter):
            try:
                value = f.converter(value)
            except Exception as exc:  # noqa: BLE001 - a fault of this field
                faults.append(_noted(exc, cls, f))
                continue
        values[f.name] = value
    # The validators see an instance of the class (its methods and properties work)
    # holding the values that structured; one that needs a field that did not is skipped.
    inst: Any = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(inst, name, value)
    for f in attrs.fields(cls):
        if f.validator is None or f.name not in values:
            continue
        try:
            f.validator(inst, f, values[f.name])
        except AttributeError:
            continue
        except Exception as exc:  # noqa: BLE001 - collected and re-raised as a group
            # A FieldError, or a group shaped like cattrs' own, names its path already.
            named = isinstance(exc, FieldError | cattrs.ClassValidationError)
            faults.append(exc if named else _noted(exc, cls, f))
    return faults


def _noted(exc: Exception, cls: type, field: attrs.Attribute) -> Exception:
    note = AttributeValidationNote(
        f"Structuring class {cls.__name__} @ attribute {field.name}", field.name, field.type
    )
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
    return exc


def _message(exc: BaseException, field: str | None) -> str:
    """The message of ``exc`` without what the path already says.

    attrs' validators raise ``TypeError(message, attribute, ...)`` and name the field
    inside the message (``'t' must be > 0: 0``).
    """
    first = exc.args[0] if exc.args else None
    text = first if len(exc.args) > 1 and isinstance(first, str) and first else str(exc)
    if field and text.startswith(f"'{field}' "):
        text = text[len(field) + 3 :]
    return text


CONVERTER = make_converter()


def _flatten(exc: BaseException, path: str, out: list[str], field: str | None = None) -> None:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            sub_path, sub_field = path, None
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, AttributeValidationNote):
                    sub_path, sub_field = f"{path}.{note.name}", note.name
                elif isinstance(note, IterableValidationNote):
                    sub_path, sub_field = f"{path}[{note.index}]", None
            _flatten(sub, sub_path, out, sub_field)
        return
    text = _message(exc, field)
    if isinstance(exc, FieldError):
        out.append(f"{path}.{exc.field}: {exc}")
    elif isinstance(exc, KeyError):
        out.append(f"{path}: required field missing")
    elif isinstance(exc, ValueError | TypeError) and text:
        out.append(f"{path}: {text}")
    else:
        out.append(f"{path}: {type(exc).__name__}: {text}")


def structure(obj: dict[str, Any], cls: type) -> Any:
    """Structure a JSON object into ``cls`` or raise :class:`InputError` listing every fault."""
    try:
        return CONVERTER.structure(obj, cls)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        errors: list[str] = []
        _flatten(exc, "$", errors)
        raise InputError(errors) from None


def unstructure(inp: Any) -> dict[str, Any]:
    out = CONVERTER.unstructure(inp)
    assert isinstance(out, dict)
    return out


def pattern(regex: str, what: str) -> Callable[[Any, attrs.Attribute, str], None]:
    """An attrs validator: the whole string matches ``regex``; ``what`` names the expectation.

    The pattern is also exported in the JSON Schema.
    """
    compiled = re.compile(regex)

    def check(_inst: Any, attr: attrs.Attribute, value: str) -> None:
        if value is not None and not compiled.fullmatch(value):
            raise FieldError(attr.name, f"expected {what}, got {shown(value)}")

    check.json_pattern = regex  # type: ignore[attr-defined]
    return check


def positive(_inst: Any, attr: attrs.Attribute, value: float) -> None:
    """An attrs validator: a number above 0 (``NaN`` is not)."""
    if not (isinstance(value, int | float) and value > 0):
        raise FieldError(attr.name, f"expected a positive number, got {value!r}")


def between(
    low: float, high: float, what: str = ""
) -> Callable[[Any, attrs.Attribute, float], None]:
    """An attrs validator: ``low <= value <= high``; ``what`` names the unit in the error
    (``between(1, 256, "requests in flight")``: "expected 1 to 256 requests in flight")."""
    unit = f" {what}" if what else ""

    def check(_inst: Any, attr: attrs.Attribute, value: float) -> None:
        if not (isinstance(value, int | float) and low <= value <= high):
            raise FieldError(attr.name, f"expected {low:g} to {high:g}{unit}, got {value!r}")

    return check


def http_url(_inst: Any, attr: attrs.Attribute, value: str) -> None:
    """An attrs validator: an ``http`` or ``https`` base URL (a host, no query), or ``""``
    for not set."""
    if value == "":
        return
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise FieldError(attr.name, f"expected an http(s) base URL, got {shown(value)}")


def _type_schema(t: Any) -> dict[str, Any]:
    if t is Digits:
        return {"type": ["string", "integer"], "pattern": "^[0-9]{1,20}$", "minimum": 0}
    if t is str:
        return {"type": "string"}
    if t is bool:
        return {"type": "boolean"}
    if t is int:
        return {"type": "integer"}
    if t is float:
        return {"type": "number"}
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        inner = (
            _type_schema(non_null[0])
            if len(non_null) == 1
            else {"anyOf": [_type_schema(a) for a in non_null]}
        )
        return {"anyOf": [inner, {"type": "null"}]} if len(non_null) < len(args) else inner
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple) or t in (list, tuple):
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if isinstance(t, type) and attrs.has(t):
        return json_schema(t, top=False)
    return {}


def json_schema(cls: type, *, title: str | None = None, top: bool = True) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of an attrs input class, for the REST and MCP surfaces."""
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        prop = _type_schema(hints.get(field.name, field.type))
        validators = _validators_of(field.validator)
        for v in validators:
            if hasattr(v, "json_pattern"):
                prop["pattern"] = "^(?:" + v.json_pattern + ")$"
        if "description" in field.metadata:
            prop["description"] = field.metadata["description"]
        if "minimum" in field.metadata:
            prop["minimum"] = field.metadata["minimum"]
        if field.default is attrs.NOTHING:
            required.append(field.name)
        elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            prop["default"] = field.default
        props[field.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if top:
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title or cls.__name__,
            **schema,
        }
    return schema


def _validators_of(v: Any) -> list[Any]:
    if v is None:
        return []
    inner = getattr(v, "_validators", None)
    if inner is not None:
        return [x for sub in inner for x in _validators_of(sub)]
    inner_opt = getattr(v, "validator", None)
    if inner_opt is not None and type(v).__name__ == "_OptionalValidator":
        return _validators_of(inner_opt)
    return [v]


#: The metadata key that marks a config field as a secret (what :func:`secret` sets).
SECRET = "secret"  # noqa: S105 - a metadata key, not a password


def secret(**kwargs: Any) -> Any:
    """A config field that holds a secret: the host learns its value and scrubs it.

    Use it in a capability's config class instead of ``attrs.field``
    (``password: str = secret()``, ``tokens: list[str] = secret(factory=list)``); it is
    ``attrs.field(default="", repr=False, metadata={"secret": True}, **kwargs)``, so
    ``attrs.field(metadata={"secret": True})`` says the same.  At start-up the host
    learns the field's value, as configured in ``[capability.<msg_type>]`` or defaulted,
    and scrubs it from every log line, event, reply and journal entry, like a
    credential's.
    """
    if "factory" not in kwargs:
        kwargs.setdefault("default", "")
    kwargs.setdefault("repr", False)
    kwargs["metadata"] = {**kwargs.get("metadata", {}), SECRET: True}
    return attrs.field(**kwargs)
