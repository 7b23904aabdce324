"""The host: wires configuration, plugins, journal, workers and transport, and runs the loop.

The main loop (not a stomp.py callback) keeps the broker connection up, ends thread
jobs that overran, and watches for a stop.  A stop -- SIGTERM/SIGINT (exit 0) or a
``shutdown`` request (exit 100) -- stops intake, lets running jobs finish within the
drain budget, kills the rest's process groups, and disconnects: whatever was not
finished stays unacknowledged and is redelivered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from loguru import logger

from opsagent import config as configuration
from opsagent import credentials as creds
from opsagent import plugins
from opsagent.capability import Capability
from opsagent.completion import Completion
from opsagent.dispatch import Dispatcher
from opsagent.journal import Journal
from opsagent.ledger import Ledger
from opsagent.transport.base import Transport
from opsagent.workers import Workers

EXIT_OK = 0
EXIT_DELIBERATE = 100
EXIT_CONFIG = 78
EXIT_UNREACHABLE = 75


class StartupError(RuntimeError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def effective(cap: Capability, cfg: configuration.Config) -> Capability:
    """The declaration with the host's ``time_limit``/``concurrency``/``queue_limit`` overrides."""
    import attrs

    over = configuration.overrides(cfg, cap.msg_type)
    return attrs.evolve(cap, **over) if over else cap


class Host:
    def __init__(
        self,
        cfg: configuration.Config,
        *,
        transport: Transport | None = None,
        registry: plugins.Registry | None = None,
    ) -> None:
        self.cfg = cfg
        self.instance = cfg.host.instance
        self.pid = os.getpid()
        self._stop = threading.Event()
        self.exit_status = EXIT_OK
        self.stop_reason = ""
        if registry is None:
            try:
                registry = plugins.load(
                    strict=cfg.host.strict,
                    allow=cfg.capabilities.allow,
                    deny=cfg.capabilities.deny,
                    require=cfg.capabilities.require,
                )
            except plugins.PluginError as exc:
                raise StartupError(str(exc), EXIT_CONFIG) from exc
        for b in registry.broken:
            logger.error(
                "plugin {} ({} {}) is broken and was skipped: {}",
                b.name,
                b.distribution,
                b.version,
                b.error,
            )
        self.registry = registry
        caps = {m: effective(c, cfg) for m, c in registry.capabilities.items()}
        registry.capabilities.update(caps)
        configs: dict[str, Any] = {}
        tables: dict[str, dict[str, Any]] = {}
        unavailable: dict[str, str] = {}
        resolved: dict[str, dict[str, creds.Credential]] = {}
        for m, cap in caps.items():
            if cap.control:
                continue
            try:
                tables[m] = configuration.section_table(cfg, m)
                configs[m] = configuration.section(cfg, m, cap.config)
            except configuration.ConfigError as exc:
                raise StartupError(str(exc), EXIT_CONFIG) from exc
            resolved[m] = {}
            for name in cap.credentials:
                try:
                    resolved[m][name] = creds.resolve(name, cfg.credentials)
                except creds.CredentialMissing as exc:
                    unavailable[m] = str(exc)
            if m in unavailable:
                logger.warning("{} is unavailable: {}", m, unavailable[m])
                if m in cfg.capabilities.require:
                    raise StartupError(
                        f"required capability {m} is unavailable: {unavailable[m]}", EXIT_CONFIG
                    )
        self.unavailable = unavailable
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        journal_path = cfg.state_dir / "journal.sqlite3"
        self.journal = Journal(journal_path)
        self.journal.prune(7 * 86400)
        self.ledger = Ledger()
        queue_total = sum(c.queue_limit + c.concurrency for c in caps.values() if not c.control)
        # Above what the host can hold locally, so the broker never withholds a control
        # message because this consumer has too many unacknowledged deliveries.
        self.prefetch = cfg.broker.prefetch or queue_total + 100
        if transport is None:
            from opsagent.transport.stomp import StompTransport

            transport = StompTransport(cfg.broker, prefetch=self.prefetch, client_id=self.instance)
        self.transport = transport
        self.completion = Completion(
            transport,
            self.journal,
            self.ledger,
            topic=cfg.broker.topic,
            sender=self.instance,
            namespace=cfg.host.namespace,
        )
        self.workers = Workers(
            caps,
            finish=self.completion.finish,
            ledger=self.ledger,
            cache_dir=cfg.cache_dir,
            state_dir=cfg.state_dir,
            journal=self.journal,
            journal_path=journal_path,
            configs=configs,
            tables=tables,
            credentials=resolved,
            env_allow=cfg.host.env_allow,
            grace=cfg.host.kill_grace_seconds,
            output_cap=cfg.host.output_cap_bytes,
        )
        self.dispatcher = Dispatcher(
            registry=registry,
            transport=transport,
            journal=self.journal,
            ledger=self.ledger,
            workers=self.workers,
            completion=self.completion,
            namespace=cfg.host.namespace,
            require_namespace=cfg.host.require_namespace,
            max_body=cfg.host.max_body_bytes,
            control=self,
            unavailable=unavailable,
        )
        self.ready = threading.Event()

    # -- Control (health_ping, shutdown) ---------------------------------------------

    def request_shutdown(self, reason: str) -> None:
        logger.warning("shutdown requested: {}", reason)
        self.stop(EXIT_DELIBERATE, reason)

    def stop(self, status: int = EXIT_OK, reason: str = "stop") -> None:
        if not self._stop.is_set():
            self.exit_status = status
            self.stop_reason = reason
            self.dispatcher.accepting = False
            self._stop.set()

    @property
    def state(self) -> str:
        """READY (no job in flight) or PROCESSING, as the monitor shows it."""
        return "PROCESSING" if self.ledger.in_flight else "READY"

    # -- the loop --------------------------------------------------------------------

    def connect(self) -> None:
        """Connect at start-up, or raise :class:`StartupError` (75) after the configured tries."""
        attempts = max(1, self.cfg.broker.connect_attempts)
        tries = 0
        while not self._stop.is_set():
            if self.transport.ensure(self.dispatcher.on_delivery):
                return
            tries = getattr(self.transport, "failures", tries + 1)
            if tries >= attempts:
                raise StartupError(
                    f"broker {', '.join(self.cfg.broker.hosts)} unreachable after {tries} "
                    f"tries: {getattr(self.transport, 'last_error', '')}",
                    EXIT_UNREACHABLE,
                )
            time.sleep(0.1)

    def run(self, *, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, lambda *_: self.stop(EXIT_OK, "SIGTERM"))
            signal.signal(signal.SIGINT, lambda *_: self.stop(EXIT_OK, "SIGINT"))
        started = time.monotonic()
        self.connect()
        logger.info(
            "{} subscribed to {} in {:.3f} s: capabilities {}; broken {}",
            self.instance,
            self.cfg.broker.queue,
            time.monotonic() - started,
            ", ".join(sorted(self.registry.msg_types)),
            ", ".join(b.name for b in self.registry.broken) or "none",
        )
        self.ready.set()
        was_up = True
        while not self._stop.wait(0.1):
            up = self.transport.ensure(self.dispatcher.on_delivery)
            if up and not was_up:
                logger.info("broker connection restored")
            was_up = up
            self.workers.check_deadlines()
        self.drain()
        return self.exit_status

    def drain(self) -> None:
        budget = self.cfg.host.drain_seconds
        logger.info(
            "stopping ({}): intake stopped, draining {} job(s) for up to {:g} s",
            self.stop_reason,
            self.ledger.running,
            budget,
        )
        self.dispatcher.accepting = False
        self.transport.stop_intake()
        # Queued jobs that have not started are handed back at once.
        for ticket in self.ledger.snapshot():
            if ticket.started_at is None:
                ticket.cancel.set()
        self.workers.stop()
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and self.ledger.running:
            self.workers.check_deadlines()
            time.sleep(0.05)
        left = self.ledger.snapshot()
        for ticket in left:
            ticket.cancel.set()
        end = time.monotonic() + self.cfg.host.kill_grace_seconds + 2
        while time.monotonic() < end and self.ledger.running:
            time.sleep(0.05)
        if left:
            logger.warning("{} job(s) handed back unacknowledged for redelivery", len(left))
        self.transport.close()
        self.journal.close()
        logger.info("stopped with exit status {}", self.exit_status)


def state_dir_default() -> Path:
    return configuration.Config().state_dir
