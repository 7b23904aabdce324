"""Settings a deployment gives in its environment, and where each effective one came from.

The old agent read its settings from environment variables (``RUCIO_URL``,
``SWF_MONITOR_URL``, ``EPICPROD_*``...) set by its unit's environment file.  A
configuration field declared with :func:`from_env` takes its default from the first of
its variables that is set and not empty, so a host started with that file behaves as
the old agent did; a key in the configuration file always wins over the environment.
:func:`origins` tells, for every field, which of the three it came from: ``opsagent
selftest`` prints it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

#: Field metadata: the environment variables a field's default is read from, in order.
ENV = "env"

_MISSING = object()


def from_env(
    *names: str,
    default: Any = _MISSING,
    factory: Callable[[], Any] | None = None,
    parse: Callable[[str], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A config field whose default is the first of the variables ``names`` that is set.

    Use it instead of ``attrs.field`` (``rucio_url: str = from_env("RUCIO_URL",
    default="")``).  ``parse`` turns the variable's text into the field's value (it may
    raise ``ValueError`` with a message naming the variable); without one the text is
    the value.  With none of the variables set the default is ``default``, or what
    ``factory()`` returns.  The rest goes to ``attrs.field`` (``validator=``,
    ``converter=``, ``metadata=``...).
    """
    if not names:
        raise ValueError("from_env: name at least one environment variable")
    if (default is _MISSING) == (factory is None):
        raise ValueError("from_env: give exactly one of default and factory")

    def make() -> Any:
        for name in names:
            raw = os.environ.get(name)
            if raw:
                return parse(raw) if parse is not None else raw
        return factory() if factory is not None else default

    kwargs["metadata"] = {**kwargs.get("metadata", {}), ENV: tuple(names)}
    return attrs.field(factory=make, **kwargs)


def env_source(field: attrs.Attribute) -> str | None:
    """The variable a :func:`from_env` field takes its value from now, or ``None``."""
    for name in field.metadata.get(ENV, ()):
        if os.environ.get(name):
            return name
    return None


@attrs.frozen
class Origin:
    """One effective setting: its dotted key, its value as shown, and where it came from
    (``config file /etc/x.toml``, ``environment variable RUCIO_URL``, ``default``)."""

    key: str
    value: str
    origin: str


def _shown(field: attrs.Attribute, value: Any) -> str:
    secretive = field.metadata.get("secret") or not field.repr
    if secretive:
        return "(hidden)" if value else "(not set)"
    return repr(value)


def origins(
    obj: Any, table: Mapping[str, Any] | None, where: str, prefix: str = ""
) -> list[Origin]:
    """Every field of the attrs instance ``obj`` that was configured from ``table`` (the
    raw TOML table it was made from, at ``where``) or :func:`from_env`, with its origin;
    fields left at a plain default are listed as ``default``."""
    out = []
    table = table or {}
    for field in attrs.fields(type(obj)):
        key = f"{prefix}{field.name}"
        value = getattr(obj, field.name)
        if field.name in table:
            origin = f"config file {where}"
        else:
            variable = env_source(field)
            origin = f"environment variable {variable}" if variable else "default"
        out.append(Origin(key, _shown(field, value), origin))
    return out
