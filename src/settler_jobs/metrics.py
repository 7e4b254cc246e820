"""Prometheus metrics: the seed's four plus wait time, labelled without tenant or job id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from settler_jobs.errors import ConfigError

_DURATION_BUCKETS: Final = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600)
_WAIT_BUCKETS: Final = (0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200)


@dataclass
class Metrics:
    """One registry of job metrics; a process normally has exactly one."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.queue_depth = Gauge(
            "queue_depth", "Jobs in a queue by state.", ["queue", "state"], registry=r
        )
        self.oldest_waiting = Gauge(
            "queue_oldest_waiting_seconds", "Age of the oldest waiting job.", ["queue"], registry=r
        )
        self.job_duration = Histogram(
            "job_duration_seconds",
            "Time a job attempt ran.",
            ["queue", "kind", "tier", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.job_wait = Histogram(
            "job_wait_seconds",
            "Time from enqueue (or due time) to start.",
            ["queue", "kind", "tier"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.job_failures = Counter(
            "job_failures_total",
            "Failed job attempts; outcome retried, dead or cancelled.",
            ["queue", "kind", "tier", "outcome"],
            registry=r,
        )
        self.job_completions = Counter(
            "job_completions_total", "Jobs completed.", ["queue", "kind", "tier"], registry=r
        )
        self.dead_letters = Counter(
            "dlq_entries_total",
            "Jobs recorded in the dead-letter queue.",
            ["queue", "kind"],
            registry=r,
        )
        self._alert_gauges(r)
        self._fair_gauges(r)

    def _fair_gauges(self, r: CollectorRegistry) -> None:
        """Fair share by tier (never by tenant: bounded labels); set by the depth loop."""
        self.fair_active = Gauge(
            "tenant_active_jobs", "Running jobs of tenants of a tier.", ["tier"], registry=r
        )
        self.fair_cap_hits = Gauge(
            "tenant_cap_hits",
            "Jobs parked because their tenant was at its concurrency cap, since the lanes began.",
            ["tier"],
            registry=r,
        )
        self.fair_quota_refusals = Gauge(
            "tenant_quota_refusals",
            "Submissions refused for a full backlog quota, since the queues began.",
            ["tier"],
            registry=r,
        )

    def _alert_gauges(self, r: CollectorRegistry) -> None:
        """What the alerting rules read (deploy/prometheus); set by the worker's alerts loop."""
        self.active_oldest = Gauge(
            "queue_active_oldest_seconds",
            "Time the longest-running active job has been active.",
            ["queue"],
            registry=r,
        )
        self.workers_alive = Gauge(
            "settler_workers_alive", "Worker processes with a live heartbeat.", registry=r
        )
        self.schedule_last_success = Gauge(
            "schedule_last_success_timestamp_seconds",
            "Start time of the latest successful scheduled run (0: none yet).",
            ["schedule"],
            registry=r,
        )
        self.schedule_missed = Gauge(
            "schedule_missed",
            "1 when the schedule missed a run (see missed_reason).",
            ["schedule"],
            registry=r,
        )
        self.dlq_open = Gauge("dlq_open_entries", "Open dead-letter entries.", registry=r)
        self.dlq_open_recent = Gauge(
            "dlq_open_entries_recent",
            "Open dead-letter entries created within SETTLER_ALERT_DLQ_WINDOW_S.",
            registry=r,
        )

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP in a background thread; ConfigError if the port is taken."""
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /metrics on {host}:{port} ({exc.strerror or exc}); choose another "
                "SETTLER_METRICS_PORT, or 0 to turn the endpoint off"
            ) from None
