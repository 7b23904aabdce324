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
    combine: Callable[[Mapping[str, str]], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A config field whose default is the first of the variables ``names`` that is set.

    Use it instead of ``attrs.field`` (``rucio_url: str = from_env("RUCIO_URL",
    default="")``).  ``parse`` turns the variable's text into the field's value (it may
    raise ``ValueError`` with a message naming the variable); without one the text is
    the value; ``combine`` instead makes the value from all of them at once (given the
    environment: ``ACTIVEMQ_HOST`` and ``ACTIVEMQ_PORT`` make one ``host:port``).  With
    none of the variables set the default is ``default``, or what ``factory()`` returns.
    The rest goes to ``attrs.field`` (``validator=``, ``converter=``, ``metadata=``...).
    """
    if not names:
        raise ValueError("from_env: name at least one environment variable")
    if (default is _MISSING) == (factory is None):
        raise ValueError("from_env: give exactly one of default and factory")

    def make() -> Any:
        found, value = _value(tuple(names), parse, combine, os.environ)
        if found:
            return value
        return factory() if factory is not None else default

    kwargs["metadata"] = {
        **kwargs.get("metadata", {}),
        ENV: tuple(names),
        _READ: (parse, combine),
    }
    return attrs.field(factory=make, **kwargs)


_READ = "opsagent.setting.read"


def _value(
    names: tuple[str, ...],
    parse: Callable[[str], Any] | None,
    combine: Callable[[Mapping[str, str]], Any] | None,
    environ: Mapping[str, str],
) -> tuple[bool, Any]:
    for name in names:
        raw = environ.get(name)
        if raw:
            if combine is not None:
                return True, combine(environ)
            return True, parse(raw) if parse is not None else raw
    return False, None


def value_in(field: attrs.Attribute, environ: Mapping[str, str]) -> tuple[bool, Any]:
    """``(True, value)`` when ``environ`` (an old environment file, say) sets the
    :func:`from_env` field ``field``, as the host would read it; else ``(False, None)``."""
    names = field.metadata.get(ENV, ())
    parse, combine = field.metadata.get(_READ, (None, None))
    return _value(tuple(names), parse, combine, environ)


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
