"""Metrics endpoint start-up."""

from __future__ import annotations

import socket

import pytest

from settler_jobs.errors import ConfigError
from settler_jobs.metrics import Metrics


def test_metrics_port_in_use_is_a_clear_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*SETTLER_METRICS_PORT"):
            Metrics().serve("127.0.0.1", port)


def test_tallied_job_metrics_scrape_exactly_as_direct_observations() -> None:
    from prometheus_client import generate_latest

    def scrape(metrics: Metrics) -> list[str]:
        text = generate_latest(metrics.registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    tallied, direct = Metrics(), Metrics()
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 2.5, 99.0, 4000.0, 10_000.0]
    labels = ("q", "k", "free")
    for n, seconds in enumerate(values):
        tallied.tally.waited(labels, seconds)
        tallied.tally.completed(labels, seconds)
        direct.job_wait.labels(*labels).observe(seconds)
        direct.job_completions.labels(*labels).inc()
        direct.job_duration.labels(*labels, "completed").observe(seconds)
        if n == 4:  # a scrape in between folds what was tallied so far
            assert scrape(tallied) == scrape(direct)
    assert scrape(tallied) == scrape(direct)
    assert tallied.registry.get_sample_value(
        "job_completions_total", {"queue": "q", "kind": "k", "tier": "free"}
    ) == len(values)
