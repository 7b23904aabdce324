"""What a capability's own checks report: :class:`Check`, the result of the
``capability_checks`` hook, shown by ``opsagent selftest`` as an ``ok``/``warn``/``fail`` row.
"""

from __future__ import annotations

from typing import Literal

import attrs

Status = Literal["ok", "warn", "fail"]


@attrs.frozen
class Check:
    """One finding: a short name, ``ok``/``warn``/``fail``, and what a person should know."""

    name: str
    status: Status = attrs.field(validator=attrs.validators.in_(("ok", "warn", "fail")))
    detail: str = ""

    @classmethod
    def ok(cls, name: str, detail: str = "") -> Check:
        return cls(name, "ok", detail)

    @classmethod
    def warn(cls, name: str, detail: str = "") -> Check:
        return cls(name, "warn", detail)

    @classmethod
    def fail(cls, name: str, detail: str = "") -> Check:
        return cls(name, "fail", detail)
