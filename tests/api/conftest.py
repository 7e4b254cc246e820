"""API fixtures: a live server on the test's settings, with an operator token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from settler_jobs.config import Settings
from tests.api.live import OPERATOR_TOKEN, LiveApi, live_api


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """The test's settings plus an operator token and generous rate limits."""
    return settings.model_copy(
        update={
            "operator_token": SecretStr(OPERATOR_TOKEN),
            "api_rate_limits": {t: 0.0 for t in settings.api_rate_limits},
        }
    )


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[LiveApi]:
    """A live API for this test."""
    async with live_api(api_settings) as live:
        yield live
