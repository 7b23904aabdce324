"""Job observers: what the host tells about every ended job (the metrics endpoint, the
monitor's action log, completion notifications), attached in one list the host walks --
started with it, told of each job's end after its outcome is published, stopped with it.
A new kind of report is one more observer here, not one more field of the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from loguru import logger

from opsagent.credentials import store as creds
from opsagent.host import config as configuration
from opsagent.reporting import health


class ObserverError(RuntimeError):
    """An observer cannot start as configured (the host exits 78)."""


class Observer(Protocol):
    def start(self) -> None:
        """Begin (a thread, a listening socket); raise :class:`ObserverError` if it cannot."""

    def job_ended(self, end: health.JobEnd) -> None:
        """One job ended; called on a worker thread, never on a hot lock; never blocks."""

    def stop(self) -> None:
        """End, within a bounded time."""


def monitor_token(cfg: configuration.Config) -> str | None:
    """The monitor's API token: its credential when there is one, else the old agent's
    ``$SWFMON_TOKEN``/``$SWF_MONITOR_TOKEN`` (or ``$SWF_API_TOKEN``)."""
    name = cfg.monitor.token_credential
    try:
        return creds.resolve(name, cfg.credentials).read()
    except creds.CredentialMissing:
        pass
    except (creds.CredentialError, OSError) as exc:
        logger.warning("monitor token: {}", exc)
    for variable in ("SWFMON_TOKEN", "SWF_MONITOR_TOKEN", "SWF_API_TOKEN"):
        if os.environ.get(variable):
            return os.environ[variable]
    return None


def notify_urls(cfg: configuration.Config) -> tuple[dict[str, str], dict[str, str]]:
    """``(urls, problems)``: each ``[[notify]]`` rule's webhook URL, read from its
    credential, or why it cannot be read (the host then refuses to start)."""
    urls: dict[str, str] = {}
    problems: dict[str, str] = {}
    for rule in cfg.notify:
        try:
            url = creds.resolve(rule.url_credential, cfg.credentials).read().strip()
        except (creds.CredentialError, OSError) as exc:
            problems[rule.name] = str(exc)
            continue
        if not url.startswith(("https://", "http://")) or "\n" in url:
            problems[rule.name] = (
                f"credential {rule.url_credential!r} does not hold one http(s) URL"
            )
            continue
        urls[rule.name] = url
    return urls, problems


def configured(
    cfg: configuration.Config,
    *,
    snapshot: Callable[[], health.Snapshot],
    monitor_token: str | None,
    scrub: Callable[[str], str],
    notify_urls: tuple[dict[str, str], dict[str, str]] = ({}, {}),
) -> list[Observer]:
    """The observers ``cfg`` turns on, in the order they start (and stop in reverse)."""
    out: list[Observer] = []
    if cfg.metrics.enabled:
        from opsagent.reporting.metrics import Metrics

        out.append(Metrics(snapshot, address=cfg.metrics.address, port=cfg.metrics.port))
    if cfg.monitor.enabled:
        from opsagent.reporting.monitor import Monitor

        out.append(
            Monitor(
                cfg.monitor,
                instance=cfg.host.instance,
                namespace=cfg.host.namespace,
                token=monitor_token,
                snapshot=snapshot,
                scrub=scrub,
                destination=cfg.broker.queue,
            )
        )
    if cfg.notify:
        from opsagent.reporting.notifications import Notifications

        urls, problems = notify_urls
        out.append(
            Notifications(
                cfg.notify,
                outbox=cfg.state_dir / "notifications.sqlite3",
                urls=urls,
                problems=problems,
                instance=cfg.host.instance,
                namespace=cfg.host.namespace,
                scrub=scrub,
            )
        )
    return out
