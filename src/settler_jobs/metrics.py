"""Prometheus metrics: the seed's four plus wait time, labelled without tenant or job id."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric

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
        self.tally = JobTally(self)
        self.job_duration = _FoldedHistogram(
            "job_duration_seconds",
            "Time a job attempt ran.",
            ["queue", "kind", "tier", "outcome"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.job_wait = _FoldedHistogram(
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
        self.job_completions = _FoldedCounter(
            "job_completions_total", "Jobs completed.", ["queue", "kind", "tier"], registry=r
        )
        for folded in (self.job_duration, self.job_wait, self.job_completions):
            folded.fold = self.tally.fold
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


def _no_fold() -> None:
    return None


class _FoldedHistogram(Histogram):
    """A histogram that folds in the job tally before it is collected."""

    fold: Callable[[], None] = staticmethod(_no_fold)

    def collect(self) -> Iterable[Metric]:
        self.fold()
        return super().collect()


class _FoldedCounter(Counter):
    """A counter that folds in the job tally before it is collected."""

    fold: Callable[[], None] = staticmethod(_no_fold)

    def collect(self) -> Iterable[Metric]:
        self.fold()
        return super().collect()


class _Pending:
    """Observations of one histogram child not yet folded in: bucket counts and sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0


Labels = tuple[str, str, str]
"""(queue, kind, tier)."""


class JobTally:
    """The per-job metrics (wait time, completions, completed durations) as plain numbers,
    folded into the Prometheus metrics whenever the registry is collected (every scrape and
    `generate_latest`): a scrape reads the same values as if each job had been observed
    directly, at a quarter of the cost per job. Thread-safe (scrapes run in a thread)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._wait: dict[Labels, _Pending] = {}
        self._done: dict[Labels, _Pending] = {}
        self._wait_bounds = tuple(_WAIT_BUCKETS)
        self._done_bounds = tuple(_DURATION_BUCKETS)

    def waited(self, labels: Labels, seconds: float) -> None:
        """`job_wait.labels(*labels).observe(seconds)`."""
        with self._lock:
            pending = self._wait.get(labels)
            if pending is None:
                pending = self._wait[labels] = self._new(labels, self._wait_bounds)
            pending.counts[bisect_left(self._wait_bounds, seconds)] += 1
            pending.total += seconds

    def completed(self, labels: Labels, seconds: float) -> None:
        """`job_completions.labels(*labels).inc()` and
        `job_duration.labels(*labels, "completed").observe(seconds)`."""
        with self._lock:
            pending = self._done.get(labels)
            if pending is None:
                pending = self._done[labels] = self._new(labels, self._done_bounds)
            pending.counts[bisect_left(self._done_bounds, seconds)] += 1
            pending.total += seconds

    def _new(self, labels: Labels, bounds: tuple[float, ...]) -> _Pending:
        # The series exist from their first observation (their `_created` time), as before.
        m = self._metrics
        if bounds is self._wait_bounds:
            m.job_wait.labels(*labels)
        else:
            m.job_completions.labels(*labels)
            m.job_duration.labels(*labels, "completed")
        return _Pending(len(bounds) + 1)

    def fold(self) -> None:
        """Add what was tallied since the last fold to the Prometheus metrics."""
        m = self._metrics
        with self._lock:
            for labels, pending in self._wait.items():
                if pending.total or any(pending.counts):
                    _add(m.job_wait.labels(*labels), pending)
            for labels, pending in self._done.items():
                if pending.total or any(pending.counts):
                    m.job_completions.labels(*labels).inc(sum(pending.counts))
                    _add(m.job_duration.labels(*labels, "completed"), pending)


def _add(child: Histogram, pending: _Pending) -> None:
    """What `observe` does per value, once per bucket (bucket i holds values <= bound i);
    then `pending` starts again from zero."""
    child._sum.inc(pending.total)
    pending.total = 0.0
    counts = pending.counts
    for i, bucket in enumerate(child._buckets):
        if counts[i]:
            bucket.inc(counts[i])
            counts[i] = 0
