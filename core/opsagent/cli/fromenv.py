"""``opsagent config --from-env FILE``: the old unit's environment file as TOML.

The file (``production.env``: ``KEY=VALUE`` lines, comments, quotes, ``export``) is
parsed, never executed: ``$(...)`` and ``${...}`` stay text (and are flagged).  Each
variable the host or an installed capability reads (:func:`opsagent.setting.from_env`
fields, ``time_limit_env``, the old credential variables) becomes the key it sets; a
secret becomes a credential or stays in the environment file, never TOML.  Everything
else is listed at the end as having no equivalent, with the reason when it is known.
The host reads those same variables itself, so the TOML is optional: it makes the
settings explicit (the file wins over the environment).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from opsagent.capability import Capability
from opsagent.credentials.store import LEGACY_SOURCES
from opsagent.host import config as configuration
from opsagent.setting import ENV, value_in

#: Variables the old agent's environment carries that the host has no use for, and why.
KNOWN_UNUSED = {
    re.compile(r"(DJANGO_.*|DB_.*|DATABASE_.*|SECRET_KEY|POSTGRES.*)"): (
        "the web tier's database settings: only the old Django doers used them"
    ),
    re.compile(r"SWF_HOME|SWF_TESTBED_CONFIG|SWF_.*_DIR"): "the testbed's own layout",
    re.compile(r"EPICPROD_.*_TIMEOUT"): (
        "no installed capability declares it (time_limit_env): install the capability "
        "that replaces that handler"
    ),
    re.compile(r"EPICPROD_.*"): "a setting of an old handler no installed capability replaces",
    re.compile(r"PYTHONPATH|VIRTUAL_ENV|PATH|HOME|LANG|LC_.*"): (
        "the process environment: the unit sets it (Environment=)"
    ),
}


def parse(text: str) -> dict[str, str | None]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` and a shell's ``source``
    agree on them; nothing is expanded or run."""
    from dotenv import dotenv_values

    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


@attrs.define
class Conversion:
    """Tables in order, each ``(key, value, note)``; what was used; what is left."""

    tables: dict[str, list[tuple[str, str, str]]] = attrs.Factory(dict)
    used: set[str] = attrs.Factory(set)
    notes: list[str] = attrs.Factory(list)

    def put(self, table: str, key: str, value: Any, note: str = "") -> None:
        self.tables.setdefault(table, []).append((key, _toml(value), note))

    def text(self, env: Mapping[str, str | None], source: str) -> str:
        lines = [f"# From {source} by `opsagent config --from-env`; nothing in it was run."]
        lines += [f"# {n}" for n in self.notes]
        for table, entries in self.tables.items():
            lines += ["", f"[{table}]"]
            for key, value, note in entries:
                lines.append(f"{key} = {value}" + (f"  # {note}" if note else ""))
        left = [k for k in env if k not in self.used]
        if left:
            lines += ["", "# No equivalent (not used by this host):"]
            for name in left:
                lines.append(f"#   {name}: {_why(name, env[name])}")
        return "\n".join(lines) + "\n"


def _why(name: str, value: str | None) -> str:
    if value is None:
        return "a name without a value"
    for pattern, reason in KNOWN_UNUSED.items():
        if pattern.fullmatch(name):
            return reason
    return "unknown to the host and its installed capabilities"


def _secretive(field: attrs.Attribute) -> bool:
    return bool(field.metadata.get("secret")) or not field.repr


def _fields(conv: Conversion, table: str, cls: type, env: Mapping[str, str]) -> None:
    for field in attrs.fields(cls):
        names = field.metadata.get(ENV, ())
        if not names:
            continue
        found, value = value_in(field, env)
        if not found:
            continue
        present = [n for n in names if env.get(n)]
        conv.used.update(present)
        shown = ", ".join(present)
        if _secretive(field):
            conv.notes.append(
                f"{shown}: a secret -- keep it in the unit's environment file "
                f"(EnvironmentFile=, mode 0600), where the host reads it; not written here"
            )
            continue
        if table == "monitor" and field.name == "enabled":
            conv.put(table, "enabled", True, f"{shown} is set: the old agent reported to it")
            continue
        conv.put(table, field.name, value, f"was {shown}")


def convert(
    text: str,
    capabilities: Mapping[str, Capability],
    source: str = "the environment file",
) -> str:
    """The TOML equivalent of an environment file (see the module's docstring)."""
    raw = parse(text)
    env = {k: v for k, v in raw.items() if v}
    conv = Conversion()
    for name in configuration.SECTIONS:
        _fields(conv, name, _cls(name), env)
    # One consumer active at a time: what lets the new host and the old agent (or two new
    # hosts) share the queue during a cut-over, and hand over at once (docs/cutover.md).
    conv.put("broker", "exclusive", True, "one active consumer at a time (docs/cutover.md)")
    for msg_type in sorted(capabilities):
        cap = capabilities[msg_type]
        table = f"capability.{msg_type}"
        if cap.time_limit_env and env.get(cap.time_limit_env):
            try:
                seconds = float(env[cap.time_limit_env])
                conv.put(table, "time_limit", seconds, f"was {cap.time_limit_env}")
            except ValueError:
                conv.notes.append(
                    f"{cap.time_limit_env}={env[cap.time_limit_env]!r} is not a number of "
                    f"seconds: {msg_type} keeps its declared {cap.time_limit:g} s"
                )
            conv.used.add(cap.time_limit_env)
        if cap.config is not None:
            _fields(conv, table, cap.config, env)
    for cred, legacy in LEGACY_SOURCES.items():
        for variable, how, leaf in legacy:
            if not env.get(variable) or variable in conv.used:
                continue
            conv.used.add(variable)
            table = f"credentials.{cred}"
            if how == "value":
                conv.put(table, "env", variable, "a secret: keep it in the environment file")
            else:
                path = str(Path(env[variable]) / leaf) if how == "dir" else env[variable]
                conv.put(table, "file", path, f"was {variable}; read in place at every job")
            break
    if env.get("JLAB_RUCIO_URL") and "rucio_snapshot_update" in capabilities:
        conv.notes.append(
            "rucio_snapshot_update: the old agent did not verify the JLab Rucio server's "
            "certificate; set rucio_tls_verify = true (with rucio_ca_bundle), or knowingly "
            "false, in [capability.rucio_snapshot_update]: the capability refuses to guess"
        )
    for name, value in raw.items():
        if value and re.search(r"\$[({A-Za-z_]", value) and name in conv.used:
            conv.notes.append(
                f"{name} holds {value!r}: written as is -- an environment file is not "
                f"expanded by systemd; put the value it stands for"
            )
    return conv.text(raw, source)


def _cls(name: str) -> type:
    return {
        "host": configuration.HostConfig,
        "broker": configuration.BrokerConfig,
        "monitor": configuration.MonitorConfig,
        "metrics": configuration.MetricsConfig,
        "scheduling": configuration.SchedulingConfig,
    }[name]
