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
