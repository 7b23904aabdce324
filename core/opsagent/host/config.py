"""Configuration: one TOML file structured by cattrs into typed classes.

With no file at all the host uses the wire contract's defaults and the ``ACTIVEMQ_*``,
``EPICPROD_OPS_QUEUE`` and ``SWF_TMP_DIR`` variables, so it can stand in for the old
agent without a configuration change.  A variable set in the environment wins over the
built-in default but not over the file.  Each ``[capability.<msg_type>]`` section is
structured into that capability's own config class; the keys ``time_limit``,
``concurrency``, ``queue_limit`` and ``memory_limit`` there override the declaration;
the old agent's ``EPICPROD_*_TIMEOUT`` variables are mapped onto ``time_limit`` in one
table, :data:`LEGACY_TIME_LIMITS`.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any

import attrs

from opsagent.capability import DeclarationError, check_memory_limit
from opsagent.credentials.store import CredentialSource
from opsagent.schema import InputError, make_converter, structure


class ConfigError(ValueError):
    """A configuration problem, naming the file and the key."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _default_hosts() -> list[str]:
    return [f"{_env('ACTIVEMQ_HOST', '127.0.0.1')}:{_env('ACTIVEMQ_PORT', '61613')}"]


def _default_state_dir() -> str:
    if os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "opsagent")


USER_HEADERS = ("auto", "JMSXUserID", "_AMQ_VALIDATED_USER")


@attrs.frozen
class BrokerConfig:
    """``[broker]``: where the requests come from and the events go."""

    hosts: list[str] = attrs.Factory(_default_hosts)
    user: str | None = attrs.Factory(lambda: os.environ.get("ACTIVEMQ_USER") or None)
    password: str | None = attrs.field(
        factory=lambda: os.environ.get("ACTIVEMQ_PASSWORD") or None, repr=False
    )
    use_ssl: bool = attrs.Factory(lambda: _env_bool("ACTIVEMQ_USE_SSL", False))
    ca_certs: str | None = attrs.Factory(lambda: os.environ.get("ACTIVEMQ_SSL_CA_CERTS") or None)
    queue: str = attrs.Factory(lambda: _env("EPICPROD_OPS_QUEUE", "/queue/epicprod.ops"))
    topic: str = "/topic/epictopic"
    heartbeat_ms: int = 30000
    #: Unacknowledged deliveries the broker may hand this host; by default the sum of the
    #: capabilities' queue limits plus 100 (so a health_ping never waits in the broker),
    #: at most 2,000 (a larger prefetch lets a burst stall the connection).
    prefetch: int | None = None
    exclusive: bool = False
    reconnect_max_delay: float = 30.0
    #: Tries to connect at start-up before exiting with status 75.
    connect_attempts: int = 10
    #: The header carrying the broker's validated sender: ``auto`` picks it from the
    #: CONNECTED frame's ``server`` (``JMSXUserID`` on ActiveMQ Classic,
    #: ``_AMQ_VALIDATED_USER`` on Artemis).  Only the one the broker stamps is read: the
    #: other passes through from the client unchanged, so it proves nothing.
    user_header: str = "auto"

    def __attrs_post_init__(self) -> None:
        if self.user_header not in USER_HEADERS:
            raise ValueError(
                f"user_header {self.user_header!r}: expected one of {', '.join(USER_HEADERS)}"
            )
        for dest in (self.queue, self.topic):
            if not dest.startswith(("/queue/", "/topic/")):
                raise ValueError(f"destination {dest!r} must start with /queue/ or /topic/")
        for hp in self.hosts:
            host, _, port = hp.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"broker host {hp!r}: expected host:port")

    def host_ports(self) -> list[tuple[str, int]]:
        out = []
        for hp in self.hosts:
            host, _, port = hp.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out


ENV_ALLOW = [
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "SWF_TMP_DIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SYSTEMD_EXEC_PID",
    # systemd's RuntimeDirectory=: where Job.private_dir() puts credential copies.
    "RUNTIME_DIRECTORY",
    "XDG_RUNTIME_DIR",
]


@attrs.frozen
class HostConfig:
    """``[host]``: identity, directories and limits of this host."""

    instance: str = attrs.Factory(lambda: f"opsagent-{socket.gethostname().split('.')[0]}")
    namespace: str = "prodops"
    #: Also refuse messages that carry no namespace (the old agent accepted them).
    require_namespace: bool = False
    cache_dir: str = attrs.Factory(lambda: _env("SWF_TMP_DIR", "/data/swf-tmp"))
    state_dir: str = attrs.Factory(_default_state_dir)
    max_body_bytes: int = 1 << 20
    max_event_bytes: int = 1 << 20
    drain_seconds: float = 30.0
    kill_grace_seconds: float = 5.0
    output_cap_bytes: int = 64 * 1024
    #: Address space of each ``process`` job and the programs it starts, in MiB
    #: (``RLIMIT_AS``), unless its capability declares or is configured a ``memory_limit``;
    #: 0: no limit.  See operations, "Memory".
    job_memory_limit_mb: int = attrs.field(default=2048, validator=check_memory_limit)
    #: Variables passed from the host's environment to jobs; credentials are added.
    env_allow: list[str] = attrs.Factory(lambda: list(ENV_ALLOW))
    #: How often credentials are looked at again (renewals, expiry, mode changes).
    credential_check_seconds: float = 60.0
    strict: bool = False
    log_json: bool = False
    log_level: str = "INFO"


@attrs.frozen
class CapabilitiesConfig:
    """``[capabilities]``: which capabilities this host offers."""

    allow: list[str] = attrs.Factory(list)
    deny: list[str] = attrs.Factory(list)
    require: list[str] = attrs.Factory(list)


@attrs.frozen
class MonitorConfig:
    """``[monitor]``: heartbeats and action-log records to the existing monitor (docs/wire.md).

    Off by default.  Posts go from a background thread through a bounded queue with
    short timeouts, so a slow or dead monitor never delays a message.
    """

    enabled: bool = False
    #: Base of the heartbeat API (``<url>/api/systemagents/heartbeat/``).
    url: str = attrs.Factory(lambda: os.environ.get("SWF_MONITOR_URL", "").rstrip("/"))
    #: Base of the action log (``<http_url>/api/logs/``); default: ``url``.
    http_url: str = attrs.Factory(lambda: os.environ.get("SWF_MONITOR_HTTP_URL", "").rstrip("/"))
    #: The API token: this credential when it is configured or in
    #: ``$CREDENTIALS_DIRECTORY``, else the environment variable ``SWF_API_TOKEN``.
    token_credential: str = "swf_api_token"  # noqa: S105 - a credential name
    agent_type: str = "PRODOPS"
    #: ``app_name`` and ``instance_name`` of action-log records, as the old agent sent them.
    log_app_name: str = "epicprod"
    log_instance_name: str = "ops-agent"
    #: ``module`` of action-log records, as the old agent sent it.
    log_module: str = "epicprod_ops_agent"
    heartbeat_seconds: float = 30.0
    #: Connect and read timeout of each post.
    timeout_seconds: float = 3.0
    #: Records waiting to be posted; beyond this new ones are dropped (and counted).
    queue_limit: int = 1000

    def __attrs_post_init__(self) -> None:
        if self.enabled and not (self.url or self.http_url):
            raise ValueError(
                "monitor: enabled but no url; set [monitor] url = ... or SWF_MONITOR_URL"
            )
        if not 0 < self.heartbeat_seconds <= 60:
            raise ValueError(
                "monitor.heartbeat_seconds: the monitor marks an agent EXITED after 3 min of "
                f"silence and expects a heartbeat at least every 60 s, got {self.heartbeat_seconds}"
            )
        if not 0 < self.timeout_seconds <= 30:
            raise ValueError(
                f"monitor.timeout_seconds: expected 0 < t <= 30, got {self.timeout_seconds}"
            )
        if self.queue_limit < 1:
            raise ValueError(f"monitor.queue_limit: expected >= 1, got {self.queue_limit}")


def _loopback(address: str) -> bool:
    import ipaddress

    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@attrs.frozen
class MetricsConfig:
    """``[metrics]``: a Prometheus endpoint, on loopback only (off by default)."""

    enabled: bool = False
    address: str = "127.0.0.1"
    #: 0 picks a free port (logged at start-up).
    port: int = 9464

    def __attrs_post_init__(self) -> None:
        if not _loopback(self.address):
            raise ValueError(
                f"metrics.address: {self.address!r} is not a loopback address; the endpoint "
                f"has no authentication -- scrape it through a local agent or proxy"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"metrics.port: expected 0-65535, got {self.port}")


@attrs.frozen
class ScheduleConfig:
    """``[[schedule]]``: a request the host sends itself periodically (see operations).

    It goes through the host's own queue like any request: same validation, dedup key,
    journal, events and time limit.  A run whose previous run is still going is skipped.
    """

    #: The capability to request.
    msg_type: str
    #: Its input, checked against the capability's schema at start-up.
    input: dict[str, Any] = attrs.Factory(dict)
    #: The schedule's name in logs and ``opsagent schedule``; default: ``msg_type``.
    name: str = ""
    #: Run every this many seconds, on multiples of it since the epoch (wall clock, UTC).
    every: float | None = None
    #: Or a five-field cron expression, in the host's local time zone.
    cron: str | None = None
    #: Up to this many seconds, chosen at random per run, added to each start.
    jitter: float = 0.0
    #: After a restart that missed runs, run once at once (never more than once).
    catch_up: bool = True
    #: With ``every``: seconds after each multiple of it (``every = 30``, ``offset = 1``:
    #: 1 s after each half minute of the wall clock).
    offset: float = 0.0
    #: With ``every``: false runs every ``every`` seconds from the host's start (after
    #: ``initial_delay``) instead of on multiples of it.
    grid: bool = True
    #: No run before the host has been up this many seconds.
    initial_delay: float = 0.0
    #: Environment variables, the first one set wins, that give ``every`` in seconds; 0 or
    #: less turns the schedule off (the old agent's ``EPICPROD_*`` loop variables).
    every_env: list[str] = attrs.Factory(list)
    #: Environment variables, the first one set wins, that give ``initial_delay``.
    initial_delay_env: list[str] = attrs.Factory(list)
    #: A run that succeeds sends no event and no action record unless its outcome's data
    #: field of this name is true (the periodic capture that captured nothing); a failed
    #: run always does.
    quiet_unless: str = ""

    def __attrs_post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError(f"schedule {self.label}: set exactly one of every or cron")
        if self.every is None and (self.offset or not self.grid or self.every_env):
            raise ValueError(
                f"schedule {self.label}: offset, grid and every_env go with every, not cron"
            )
        if self.initial_delay < 0:
            raise ValueError(
                f"schedule {self.label}: initial_delay must be >= 0, got {self.initial_delay}"
            )
        if self.every is not None and not 0 <= self.offset < self.every:
            raise ValueError(
                f"schedule {self.label}: offset must be >= 0 and below every, got {self.offset}"
            )
        if self.every is not None and self.every <= 0:
            raise ValueError(f"schedule {self.label}: every must be > 0, got {self.every}")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(
                    f"schedule {self.label}: cron {self.cron!r} is not a valid cron expression "
                    f"(five fields: minute hour day-of-month month day-of-week)"
                )
        if self.jitter < 0:
            raise ValueError(f"schedule {self.label}: jitter must be >= 0, got {self.jitter}")

    @property
    def label(self) -> str:
        return self.name or self.msg_type


@attrs.frozen
class StepConfig:
    """One step of a ``[[chain]]``: a capability and its input."""

    #: The step's capability.
    msg_type: str
    #: The fixed part of its input (the chain's ``created_by`` is added when it takes one).
    input: dict[str, Any] = attrs.Factory(dict)
    #: The step's name in the chain's summary and job ids; default: ``msg_type``.
    name: str = ""


@attrs.frozen
class ChainConfig:
    """``[[chain]]``: a capability whose steps are other capabilities (see chains).

    Declared here without writing a package; the same as a ``Chain(...)`` a package
    registers.  Its input is ``created_by`` (optional), passed to each step that takes it.
    """

    #: The chain's own msg_type.
    msg_type: str
    #: Its steps, in order: ``{msg_type = ..., input = {...}, name = ...}``.
    steps: list[StepConfig]
    #: Event names by outcome; default ``<msg_type>_done`` / ``<msg_type>_failed``.
    events: dict[str, str] = attrs.Factory(dict)
    #: The action id of its summary record; default: ``msg_type``.
    action: str = ""
    #: The chain as a whole runs no step past this many seconds (each step has its own).
    time_limit: float = 86400.0
    #: What ``opsagent plugins`` and the generated docs say of it.
    description: str = ""


@attrs.frozen
class SchedulingConfig:
    """``[scheduling]``: the built-in schedule and how a hot standby keeps quiet."""

    #: Cron expression of the built-in daily ``prune_cache`` run; ``""`` turns it off.
    prune_cache: str = "17 3 * * *"
    #: With ``broker.exclusive``: seconds between the probes (``health_ping``) a host sends
    #: through its queue; it schedules only while it receives deliveries (is the active one).
    probe_seconds: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.probe_seconds <= 0:
            raise ValueError(f"scheduling.probe_seconds: expected > 0, got {self.probe_seconds}")


@attrs.frozen
class Config:
    host: HostConfig = attrs.Factory(HostConfig)
    broker: BrokerConfig = attrs.Factory(BrokerConfig)
    capabilities: CapabilitiesConfig = attrs.Factory(CapabilitiesConfig)
    monitor: MonitorConfig = attrs.Factory(MonitorConfig)
    metrics: MetricsConfig = attrs.Factory(MetricsConfig)
    scheduling: SchedulingConfig = attrs.Factory(SchedulingConfig)
    schedule: list[ScheduleConfig] = attrs.Factory(list)
    chain: list[ChainConfig] = attrs.Factory(list)
    credentials: dict[str, CredentialSource] = attrs.Factory(dict)
    #: Raw ``[capability.<msg_type>]`` tables, structured per capability by :func:`section`.
    capability: dict[str, dict[str, Any]] = attrs.Factory(dict)
    #: Raw ``[[program]]`` tables: program capabilities declared here (opsagent.program).
    program: list[dict[str, Any]] = attrs.Factory(list)
    #: Raw shared tables (``[epicprod]``), each named by an installed distribution in the
    #: ``opsagent.sections`` entry-point group: the defaults of the config of every
    #: capability whose ``config_section`` names it.
    sections: dict[str, dict[str, Any]] = attrs.Factory(dict)
    source: str = "<defaults>"

    @property
    def cache_dir(self) -> Path:
        return Path(self.host.cache_dir)

    @property
    def state_dir(self) -> Path:
        return Path(self.host.state_dir)


_conv = make_converter(forbid_extra_keys=True)

OVERRIDES = ("time_limit", "concurrency", "queue_limit", "memory_limit")


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (or nothing: defaults and environment) into a :class:`Config`."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    known = shared_sections()
    if "sections" in raw and "sections" not in known:
        # Filled from the shared tables below, never written as such.
        raise ConfigError(f"{p}: unknown key 'sections'; a shared table is [<name>] itself")
    sections = {k: raw.pop(k) for k in list(raw) if k in known and isinstance(raw[k], dict)}
    raw["source"] = str(p)
    try:
        return attrs.evolve(_conv.structure(raw, Config), sections=sections)
    except Exception as exc:  # noqa: BLE001
        lines: list[str] = []
        from opsagent.schema import _flatten

        _flatten(exc, "", lines)
        detail = "; ".join(
            line.lstrip(".").replace("Extra fields in constructor for ", "") for line in lines
        )
        raise ConfigError(f"{p}: {detail}") from None


#: The entry-point group naming the shared configuration tables (``[epicprod]``).
SECTIONS_GROUP = "opsagent.sections"


def shared_sections() -> frozenset[str]:
    """The names of the shared tables installed distributions declare (their entry points
    in :data:`SECTIONS_GROUP`; nothing is imported)."""
    from importlib.metadata import entry_points

    return frozenset(ep.name for ep in entry_points(group=SECTIONS_GROUP))


#: Keys of ``[capability.<msg_type>]`` the host reads itself (see :mod:`opsagent.host.access`).
HOST_KEYS = ("allow_users",)


def section_table(config: Config, msg_type: str, shared: str = "") -> dict[str, Any]:
    """The raw ``[capability.<msg_type>]`` table without the keys the host reads itself,
    over the shared table ``[<shared>]`` (a capability's ``config_section``)."""
    own = {
        k: v
        for k, v in config.capability.get(msg_type, {}).items()
        if k not in OVERRIDES and k not in HOST_KEYS
    }
    return {**config.sections.get(shared, {}), **own} if shared else own


def section_from_table(
    table: dict[str, Any], cls: type | None, msg_type: str, source: str = "<config>"
) -> Any:
    """Structure a capability's table into its config class (``None`` when it has none)."""
    if cls is None:
        if table:
            raise ConfigError(
                f"{source}: [capability.{msg_type}] has keys {sorted(table)} but the "
                f"capability takes no configuration"
            )
        return None
    known = {f.name for f in attrs.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{source}: [capability.{msg_type}] unknown key(s) {unknown}; known: {sorted(known)}"
        )
    try:
        return structure(table, cls)
    except InputError as exc:
        detail = "; ".join(e.replace("$.", f"capability.{msg_type}.", 1) for e in exc.errors)
        raise ConfigError(f"{source}: {detail}") from None


def section(config: Config, msg_type: str, cls: type | None, shared: str = "") -> Any:
    """The capability's own config object from ``[capability.<msg_type>]`` (over
    ``[<shared>]``)."""
    return section_from_table(section_table(config, msg_type, shared), cls, msg_type, config.source)


#: The old agent's time limit variables, each the ``time_limit`` of one capability
#: unless its ``[capability.<msg_type>]`` table sets one (the file wins, as elsewhere).
LEGACY_TIME_LIMITS = {
    "fetch_payload_log": "EPICPROD_FETCH_TIMEOUT",
    "submit_task": "EPICPROD_SUBMIT_TIMEOUT",
}


def _legacy_time_limit(msg_type: str, name: str | None = None) -> float | None:
    name = name or LEGACY_TIME_LIMITS.get(msg_type)
    raw = os.environ.get(name, "").strip() if name else ""
    if not name or not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        # A DeclarationError, as a bad [capability.*] override is: start-up stops with 78.
        raise DeclarationError(
            f"{name}: expected a positive number of seconds, got {raw!r}; fix it, or set "
            f"time_limit in [capability.{msg_type}]"
        )
    return value


def overrides(config: Config, msg_type: str, time_limit_env: str = "") -> dict[str, Any]:
    """The keys of ``[capability.<msg_type>]`` that override the declaration, with the
    legacy ``EPICPROD_*_TIMEOUT`` variable (the capability's ``time_limit_env``, else
    :data:`LEGACY_TIME_LIMITS`) as the time limit when the table sets none."""
    table = config.capability.get(msg_type, {})
    out = {k: table[k] for k in OVERRIDES if k in table}
    if "time_limit" not in out:
        legacy = _legacy_time_limit(msg_type, time_limit_env or None)
        if legacy is not None:
            out["time_limit"] = legacy
    return out
