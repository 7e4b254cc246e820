"""E2E fixtures: the CLI runner bound to the test's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from settler_jobs.config import Settings
from tests.e2e.cli_runner import Cli


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Cli:
    """Runs `python -m settler_jobs` against this test's Redis prefix and database."""
    return Cli(settings, tmp_path)
