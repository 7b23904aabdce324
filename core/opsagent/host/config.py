"""Configuration: one TOML file structured by cattrs into typed classes.

With no file at all the host uses the wire contract's defaults and the ``ACTIVEMQ_*``,
``EPICPROD_OPS_QUEUE`` and ``SWF_TMP_DIR`` variables, so it can stand in for the old
agent without a configuration change.  A variable set in the environment wins over the
built-in default but not over the file.  Each ``[capability.<msg_type>]`` section is
structured into that capability's own config class; the keys ``time_limit``,
``concurrency``, ``queue_limit`` and ``memory_limit`` there override the declaration;
a capability declares the old agent's variable for its time limit (``time_limit_env``,
``EPICPROD_FETCH_TIMEOUT``...), used when its table sets none.  Every field read from
the environment is declared with :func:`opsagent.setting.from_env`, so
:func:`setting_origins` can say where each effective setting came from.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from opsagent.capability import Capability, DeclarationError, check_memory_limit
from opsagent.credentials.renewal import RenewalConfig
from opsagent.credentials.store import CredentialSource
from opsagent.schema import InputError, make_converter, structure
from opsagent.setting import Origin, from_env, origins


class ConfigError(ValueError):
    """A configuration problem, naming the file and the key."""


def _truthy(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _hosts_of(environ: Mapping[str, str]) -> list[str]:
    host = environ.get("ACTIVEMQ_HOST") or "127.0.0.1"
    return [f"{host}:{environ.get('ACTIVEMQ_PORT') or '61613'}"]


def _default_hosts() -> list[str]:
    return _hosts_of(os.environ)


def _default_state_dir() -> str:
    if os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "opsagent")


USER_HEADERS = ("auto", "JMSXUserID", "_AMQ_VALIDATED_USER")
BROKER_KINDS = ("auto", "classic", "artemis")


@attrs.frozen
class BrokerConfig:
    """``[broker]``: where the requests come from and the events go."""

    hosts: list[str] = from_env(
        "ACTIVEMQ_HOST", "ACTIVEMQ_PORT", factory=_default_hosts, combine=_hosts_of
    )
    user: str | None = from_env("ACTIVEMQ_USER", default=None)
    password: str | None = from_env("ACTIVEMQ_PASSWORD", default=None, repr=False)
    use_ssl: bool = from_env("ACTIVEMQ_USE_SSL", default=False, parse=_truthy)
    ca_certs: str | None = from_env("ACTIVEMQ_SSL_CA_CERTS", default=None)
    queue: str = from_env("EPICPROD_OPS_QUEUE", default="/queue/epicprod.ops")
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
    #: CONNECTED frame's ``server`` (``JMSXUserID`` on ActiveMQ Classic and on Artemis,
    #: whose STOMP frames carry its ``_AMQ_VALIDATED_USER`` under that name).  Only a
    #: header the broker stamps may be read: one it passes through from the client
    #: proves nothing.
    user_header: str = "auto"
    #: Which broker this is, for the SUBSCRIBE headers it understands: ``auto`` reads the
    #: CONNECTED frame's ``server`` (``ActiveMQ/...``: ``classic``; ``ActiveMQ-Artemis/...``:
    #: ``artemis``); set it when a proxy hides the broker's name.
    kind: str = "auto"
    #: Artemis counts its flow-control window in bytes, not messages: the host asks for
    #: ``consumer-window-size`` = prefetch x this many bytes (measured: a request of
    #: 100-150 bytes of JSON costs 320-420 bytes of window).
    window_bytes_per_message: int = 512

    def __attrs_post_init__(self) -> None:
        if self.kind not in BROKER_KINDS:
            raise ValueError(f"kind {self.kind!r}: expected one of {', '.join(BROKER_KINDS)}")
        if self.window_bytes_per_message < 1:
            raise ValueError("window_bytes_per_message must be at least 1")
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
    cache_dir: str = from_env("SWF_TMP_DIR", default="/data/swf-tmp")
    state_dir: str = from_env(
        "STATE_DIRECTORY", factory=_default_state_dir, parse=lambda _: _default_state_dir()
    )
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

    On when ``SWF_MONITOR_URL`` or ``SWF_MONITOR_HTTP_URL`` is set, as the old agent's
    monitor integration was; off otherwise.  Posts go from a background thread through a
    bounded queue with short timeouts, so a slow or dead monitor never delays a message.
    """

    #: Default: on when ``SWF_MONITOR_URL`` or ``SWF_MONITOR_HTTP_URL`` is set.
    enabled: bool = from_env(
        "SWF_MONITOR_URL", "SWF_MONITOR_HTTP_URL", default=False, parse=lambda _: True
    )
    #: Base of the heartbeat API (``<url>/api/systemagents/heartbeat/``).
    url: str = from_env("SWF_MONITOR_URL", default="", parse=lambda v: v.rstrip("/"))
    #: Base of the action log (``<http_url>/api/logs/``) and of the Capcom notices
    #: (``<http_url>/api/capcom/notices/ingest/``); default: ``url``.
    http_url: str = from_env("SWF_MONITOR_HTTP_URL", default="", parse=lambda v: v.rstrip("/"))
    #: Base of the links in Capcom notices that give a path (``/logs/``), the address
    #: people reach the monitor at (``https://epic-devcloud.org/prod``); default:
    #: ``http_url``.
    public_url: str = attrs.field(default="", converter=lambda v: str(v).rstrip("/"))
    #: The API token: this credential when it is configured or in
    #: ``$CREDENTIALS_DIRECTORY``, else the environment variable ``SWFMON_TOKEN``,
    #: ``SWF_MONITOR_TOKEN`` or ``SWF_API_TOKEN`` (the first set).
    token_credential: str = "swf_api_token"  # noqa: S105 - a credential name
    agent_type: str = "PRODOPS"
    #: At start, register ``<instance>-<queue>`` at ``<url>/api/subscribers/``, as the old
    #: agent did (the monitor's subscriber list shows who consumes the queue).
    register_subscriber: bool = True
    #: Report as ``<agent_type>-agent-<user>-<N>`` (``prodops-agent-wenauseic-42``), ``N``
    #: from ``<url>/api/state/next-agent-id/``, as the old agent named itself; off: as
    #: ``[host] instance``.
    numbered_instance: bool = False
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
        if self.public_url and not self.public_url.startswith(("https://", "http://")):
            raise ValueError(
                f"monitor.public_url: expected an http(s) address, got {self.public_url!r}"
            )


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
    #: A run that fails while the host is stopping sends no event and no action record:
    #: the next run is the replacement host's (the old snapper's rule, for a capture that
    #: fails because the machine is going down).  The failure is still in the journal.
    quiet_while_stopping: bool = False

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


#: Kinds of ``[[notify]]`` target: a Mattermost incoming webhook, or any JSON webhook.
NOTIFY_KINDS = ("mattermost", "webhook")


@attrs.frozen
class NotifyRule:
    """``[[notify]]``: post a message when a job whose msg_type and outcome match ends.

    Off the message path: the message is written to an outbox in the state directory
    and posted from a background thread, retried with back-off, so a slow or dead
    webhook never delays or fails a job and nothing waiting is lost when the host
    restarts (docs/notifications.md).
    """

    #: The rule's name in logs, the outbox and ``selftest``; unique among the rules.
    name: str
    #: The credential holding the webhook's URL (the URL is a secret: anyone who has
    #: it can post).  Resolved like any credential (``[credentials.<name>]``,
    #: ``$CREDENTIALS_DIRECTORY``); never written in the configuration.
    url_credential: str
    #: msg_types whose jobs are told about, as shell globs (``submit_*``; ``*``: every
    #: job, scheduled ones such as ``prune_cache`` too).
    msg_types: list[str]
    #: ``mattermost`` (an incoming webhook) or ``webhook`` (a JSON body of the event).
    kind: str = "mattermost"
    #: Outcomes told about (globs too); default: every outcome.
    outcomes: list[str] = attrs.Factory(lambda: ["*"])
    #: The message, ``{field}`` replaced by the job's fields (docs/notifications.md); no
    #: attribute, index, conversion or format spec.
    template: str = (
        "{icon} {msg_type} **{outcome}** in {duration} s on {instance} "
        "(job {job_id}{ids}){reason_line}"
    )
    #: Mattermost: the channel to post in instead of the hook's own (``town-square``).
    channel: str = ""
    #: Mattermost: the name to post as instead of the hook's own.
    username: str = "opsagent"
    #: Mattermost: the picture to post with.
    icon_url: str = ""
    #: At most this many messages per ``rate_window_seconds``; the jobs beyond it are
    #: told in one digest message when the window ends.
    rate_limit: int = 20
    #: The rate limit's window (fixed windows, aligned on the epoch).
    rate_window_seconds: float = 60.0
    #: Connect and read timeout of each post.
    timeout_seconds: float = 5.0
    #: Longest wait between two tries of one message (the first waits 1 s, then doubling;
    #: a ``Retry-After`` is honoured up to ``expire_seconds``).
    max_backoff_seconds: float = 60.0
    #: A message not posted within this many seconds of its job's end is given up (logged).
    expire_seconds: float = 86400.0

    def __attrs_post_init__(self) -> None:
        from opsagent.reporting.template import TemplateError, check_template

        label = f"notify {self.name!r}"
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"notify.name {self.name!r}: expected letters, digits, - and _")
        if self.kind not in NOTIFY_KINDS:
            raise ValueError(f"{label}: kind {self.kind!r}: expected one of {NOTIFY_KINDS}")
        if not self.url_credential:
            raise ValueError(f"{label}: url_credential: name the credential holding the URL")
        if not self.msg_types or not self.outcomes:
            raise ValueError(f"{label}: msg_types and outcomes must not be empty")
        from opsagent.outcome import STATUSES

        unknown = [g for g in self.outcomes if not fnmatch.filter(sorted(STATUSES), g)]
        if unknown:
            known = ", ".join(sorted(STATUSES))
            raise ValueError(f"{label}: outcomes {unknown} match no outcome; known: {known}")
        try:
            check_template(self.template)
        except TemplateError as exc:
            raise ValueError(f"{label}: template: {exc}") from None
        if self.rate_limit < 1 or self.rate_window_seconds <= 0:
            raise ValueError(f"{label}: rate_limit >= 1 and rate_window_seconds > 0 expected")
        if not 0 < self.timeout_seconds <= 60:
            raise ValueError(f"{label}: timeout_seconds: expected 0 < t <= 60")
        if self.max_backoff_seconds < 1 or self.expire_seconds <= 0:
            raise ValueError(f"{label}: max_backoff_seconds >= 1 and expire_seconds > 0 expected")


def _unique_rules(_self: Any, _attr: Any, rules: list[NotifyRule]) -> None:
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"notify: rule name(s) used twice: {', '.join(twice)}")


@attrs.frozen
class McpConfig:
    """``[mcp]``: what ``opsagent mcp`` offers an assistant, and who it is on the broker.

    The MCP server holds no capability credential: it logs in to the broker as a user of
    its own (``allow_users`` of each capability decides what it may really call), never
    as the host's ``[broker] user``.
    """

    #: The capabilities offered as MCP tools (msg_types); none by default.  Control
    #: capabilities (``health_ping``, ``shutdown``, ``request_status``) never are.
    expose: list[str] = attrs.Factory(list)
    #: The MCP server's own broker user: never the host's ``[broker] user``.
    broker_user: str | None = attrs.Factory(
        lambda: os.environ.get("OPSAGENT_MCP_BROKER_USER") or None
    )
    #: Its password; from the environment, it is handed to the MCP process through a
    #: pipe and kept out of that process's environment.
    broker_password: str | None = attrs.field(
        factory=lambda: os.environ.get("OPSAGENT_MCP_BROKER_PASSWORD") or None, repr=False
    )
    #: How long a tool call waits for its job's end before answering "still running"
    #: (``opsagent_request_status`` tells the rest).
    wait_seconds: float = 50.0
    #: How often a waiting tool call reports progress.
    progress_seconds: float = 5.0
    #: ``--http``: where the streamable HTTP endpoint listens (``/mcp``), loopback only.
    http_address: str = "127.0.0.1"
    #: 0 picks a free port (printed at start-up).
    http_port: int = 8765

    def __attrs_post_init__(self) -> None:
        if not self.wait_seconds > 0:
            raise ValueError(f"mcp.wait_seconds: expected > 0, got {self.wait_seconds}")
        if not self.progress_seconds > 0:
            raise ValueError(f"mcp.progress_seconds: expected > 0, got {self.progress_seconds}")
        if not _loopback(self.http_address):
            raise ValueError(
                f"mcp.http_address: {self.http_address!r} is not a loopback address; the "
                f"endpoint has no authentication of its own -- put an authenticating proxy "
                f"in front of it for a shared assistant"
            )
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"mcp.http_port: expected 0-65535, got {self.http_port}")


@attrs.frozen
class Config:
    host: HostConfig = attrs.Factory(HostConfig)
    broker: BrokerConfig = attrs.Factory(BrokerConfig)
    capabilities: CapabilitiesConfig = attrs.Factory(CapabilitiesConfig)
    monitor: MonitorConfig = attrs.Factory(MonitorConfig)
    metrics: MetricsConfig = attrs.Factory(MetricsConfig)
    scheduling: SchedulingConfig = attrs.Factory(SchedulingConfig)
    mcp: McpConfig = attrs.Factory(McpConfig)
    schedule: list[ScheduleConfig] = attrs.Factory(list)
    chain: list[ChainConfig] = attrs.Factory(list)
    notify: list[NotifyRule] = attrs.field(factory=list, validator=_unique_rules)
    credentials: dict[str, CredentialSource] = attrs.Factory(dict)
    #: ``[renewal.<credential>]``: OIDC token files the host renews before they expire.
    renewal: dict[str, RenewalConfig] = attrs.Factory(dict)
    #: Raw ``[capability.<msg_type>]`` tables, structured per capability by :func:`section`.
    capability: dict[str, dict[str, Any]] = attrs.Factory(dict)
    #: Raw ``[[program]]`` tables: program capabilities declared here (opsagent.program).
    program: list[dict[str, Any]] = attrs.Factory(list)
    #: Raw shared tables (``[epicprod]``), each named by an installed distribution in the
    #: ``opsagent.sections`` entry-point group: the defaults of the config of every
    #: capability whose ``config_section`` names it.
    sections: dict[str, dict[str, Any]] = attrs.Factory(dict)
    source: str = "<defaults>"
    #: The file's raw tables, to tell what it set from what was defaulted.
    tables: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

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
    for reserved in ("source", "tables") + (() if "sections" in known else ("sections",)):
        if reserved in raw:
            # "sections" is filled from the shared tables below, never written as such.
            raise ConfigError(f"{p}: unknown key {reserved!r}")
    sections = {k: raw.pop(k) for k in list(raw) if k in known and isinstance(raw[k], dict)}
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    raw["source"] = str(p)
    try:
        return attrs.evolve(_conv.structure(raw, Config), sections=sections, tables=tables)
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


def _time_limit_from_env(cap: Capability) -> float | None:
    name = cap.time_limit_env
    raw = os.environ.get(name, "").strip() if name else ""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        # A DeclarationError, as a bad [capability.*] override is: start-up stops with 78.
        raise DeclarationError(
            f"{name}: expected a positive number of seconds, got {raw!r}; fix it, or set "
            f"time_limit in [capability.{cap.msg_type}]"
        )
    return value


def overrides(config: Config, capability: Capability | str) -> dict[str, Any]:
    """The keys of ``[capability.<msg_type>]`` that override the declaration, with the
    variable the declaration names in ``time_limit_env`` (the old agent's
    ``EPICPROD_*_TIMEOUT``) as the time limit when the table sets none."""
    msg_type = capability if isinstance(capability, str) else capability.msg_type
    table = config.capability.get(msg_type, {})
    out = {k: table[k] for k in OVERRIDES if k in table}
    if "time_limit" not in out and not isinstance(capability, str):
        from_env_ = _time_limit_from_env(capability)
        if from_env_ is not None:
            out["time_limit"] = from_env_
    return out


def time_limit_origin(config: Config, capability: Capability) -> str:
    """Where a capability's effective time limit comes from, for ``opsagent selftest``."""
    if "time_limit" in config.capability.get(capability.msg_type, {}):
        return f"config file {config.source}"
    name = capability.time_limit_env
    if name and os.environ.get(name, "").strip():
        return f"environment variable {name}"
    return "declaration"


#: The host's own sections whose effective settings ``opsagent selftest`` lists.
SECTIONS = ("host", "broker", "monitor", "metrics", "scheduling")


def setting_origins(config: Config) -> list[Origin]:
    """Every host setting with where it came from: config file, environment, default."""
    out: list[Origin] = []
    for name in SECTIONS:
        out += origins(
            getattr(config, name), config.tables.get(name), config.source, prefix=f"{name}."
        )
    return out
