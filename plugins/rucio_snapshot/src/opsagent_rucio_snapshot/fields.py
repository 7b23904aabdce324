"""Field validators the request and the configuration share: campaign versions, stage
names, scopes, and :func:`each` for lists (every bad item reported by its index)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, IterableValidationNote
from opsagent import pattern

CAMPAIGN = r"[0-9]{2}\.[0-9]{2}\.[0-9]{1,3}"
STAGE = r"[A-Z][A-Z0-9_]{0,31}"
SCOPE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,29}"


def _field_error(inst: Any, attr: attrs.Attribute, errors: list[Exception]) -> Exception:
    # Shaped like cattrs' own errors so opsagent.schema reports "$.<field>[<i>]: ...".
    group = cattrs.IterableValidationError(attr.name, errors, list)
    group.__notes__ = [AttributeValidationNote(f"attribute {attr.name}", attr.name, list)]
    return cattrs.ClassValidationError(f"While checking {type(inst).__name__}", [group], type(inst))


def each(
    check: Callable[[Any, attrs.Attribute, Any], None], *, non_empty: bool = False
) -> Callable[[Any, attrs.Attribute, Any], None]:
    """Apply ``check`` to every item of a list, reporting each bad item by index."""

    def validate(inst: Any, attr: attrs.Attribute, value: list[Any] | None) -> None:
        if value is None:
            return
        errors: list[Exception] = []
        if non_empty and not value:
            err = ValueError("expected at least one item (leave the field out instead)")
            raise _field_error(inst, attr, [err]) from None
        for i, item in enumerate(value):
            try:
                check(inst, attr, item)
            except ValueError as exc:
                # A plain error: the notes below carry the path (field and index).
                item_error = ValueError(str(exc))
                item_error.__notes__ = [IterableValidationNote(f"@ index {i}", i, type(item))]
                errors.append(item_error)
        if errors:
            raise _field_error(inst, attr, errors)

    return validate


campaign = pattern(CAMPAIGN, "a campaign version like 26.02.0")
