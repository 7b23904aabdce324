"""An optional Prometheus endpoint, on loopback only (``[metrics]``, off by default).

Counters and the duration histogram are updated as jobs end; everything else (jobs in
flight, queue depth, broker connection, credential expiry, capability availability,
the dispatcher's counts) is read from the host's :class:`~opsagent.reporting.health.Snapshot` when
Prometheus scrapes, so nothing on the message path pays for it.  Each host has its own
registry, never prometheus-client's global one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opsagent.reporting import health

#: Job durations span milliseconds (cache hits) to the 900 s of a Rucio sweep.
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800)


class _Live(Collector):
    """Gauges read from a snapshot at scrape time."""

    def __init__(self, snapshot: Callable[[], health.Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        connected = GaugeMetricFamily(
            "opsagent_broker_connected", "1 when connected and subscribed to the broker"
        )
        connected.add_metric([], 1.0 if snap.broker_connected else 0.0)
        yield connected
        writable = GaugeMetricFamily(
            "opsagent_journal_writable",
            "1 when the journal's last commit succeeded, 0 while it cannot be written",
        )
        writable.add_metric([], 1.0 if snap.journal_error is None else 0.0)
        yield writable
        in_flight = GaugeMetricFamily(
            "opsagent_jobs_in_flight",
            "Accepted jobs not yet ended (queued or running)",
            labels=["capability"],
        )
        depth = GaugeMetricFamily(
            "opsagent_queue_depth",
            "Jobs waiting in the capability's local queue",
            labels=["capability"],
        )
        available = GaugeMetricFamily(
            "opsagent_capability_available",
            "1 when the capability takes requests, 0 when its credentials keep it unavailable",
            labels=["capability"],
        )
        for cap in snap.capabilities:
            in_flight.add_metric([cap], float(snap.in_flight.get(cap, 0)))
            depth.add_metric([cap], float(snap.queued.get(cap, 0)))
            available.add_metric([cap], 0.0 if cap in snap.unavailable else 1.0)
        yield in_flight
        yield depth
        yield available
        expiry = GaugeMetricFamily(
            "opsagent_credential_expiry_timestamp_seconds",
            "When the credential expires (x509 notAfter, JWT exp), as a Unix time",
            labels=["credential"],
        )
        for name, when in sorted(snap.credential_expiry.items()):
            expiry.add_metric([name], when)
        yield expiry
        renewals = CounterMetricFamily(
            "opsagent_credential_renewals",
            "Renewals of a credential the host keeps fresh, by result",
            labels=["credential", "result"],
        )
        failing = GaugeMetricFamily(
            "opsagent_credential_renewal_failing",
            "1 while the last renewal of the credential failed (the old token is still used)",
            labels=["credential"],
        )
        for name, state in sorted(snap.renewal.items()):
            renewals.add_metric([name, "ok"], float(state.get("renewals", 0)))
            renewals.add_metric([name, "failed"], float(state.get("failures", 0)))
            failing.add_metric([name], 1.0 if state.get("consecutive_failures") else 0.0)
        yield renewals
        yield failing
        broken = GaugeMetricFamily("opsagent_plugins_broken", "Plugins that failed to load")
        broken.add_metric([], float(len(snap.broken)))
        yield broken
        messages = CounterMetricFamily(
            "opsagent_messages",
            "Messages handled by the receiver, by what became of them",
            labels=["result"],
        )
        for result, n in sorted(snap.counts.items()):
            messages.add_metric([result], float(n))
        yield messages


class Metrics:
    """The host's metrics and, once started, the HTTP endpoint serving them."""

    def __init__(
        self,
        snapshot: Callable[[], health.Snapshot],
        *,
        address: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        #: Where :meth:`start` serves (``[metrics] address`` and ``port``; 0: any free port).
        self.address = address
        self.wanted_port = port
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter(
            "opsagent_jobs",
            "Jobs ended, by capability and outcome",
            ["capability", "outcome"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "opsagent_job_duration_seconds",
            "Time from a job's start to its end",
            ["capability"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Live(snapshot))
        self._server: Any = None
        self.port: int | None = None

    def job_ended(self, end: health.JobEnd) -> None:
        self.jobs.labels(end.msg_type, end.status).inc()
        self.durations.labels(end.msg_type).observe(end.duration)

    def start(self) -> None:
        """Serve ``/metrics`` on :attr:`address`; the port it got is :attr:`port`.

        Raises :class:`~opsagent.host.observers.ObserverError` when it cannot listen there.
        """
        from loguru import logger
        from prometheus_client import start_http_server

        from opsagent.host.observers import ObserverError

        try:
            server, _thread = start_http_server(
                self.wanted_port, addr=self.address, registry=self.registry
            )
        except OSError as exc:
            raise ObserverError(
                f"metrics: cannot listen on {self.address}:{self.wanted_port}: {exc.strerror}; "
                f"choose another [metrics] port"
            ) from exc
        self._server = server
        self.port = int(server.server_port)
        logger.info("metrics on http://{}:{}/metrics", self.address, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
