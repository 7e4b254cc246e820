"""Dashboard fixtures: a live API with workers, and a headless Chromium page logged in."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page, async_playwright
from pydantic import SecretStr

from settler_jobs.config import Settings
from tests.api.live import OPERATOR_TOKEN, LiveApi, live_api
from tests.dashboard.kinds import registry
from tests.harness import System, system


@pytest.fixture
def dash_settings(settings: Settings) -> Settings:
    """The test's settings with an operator token."""
    return settings.model_copy(update={"operator_token": SecretStr(OPERATOR_TOKEN)})


@dataclass
class Dash:
    """A running stack and a browser page on it."""

    live: LiveApi
    system: System
    page: Page

    def url(self, path: str) -> str:
        return f"{self.live.url}/dashboard{path}"

    async def login(self) -> None:
        await self.page.goto(self.url("/login"))
        await self.page.fill("#token", OPERATOR_TOKEN)
        await self.page.click("#login")
        await self.page.wait_for_selector("#logout")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium of the system (no browser download)."""
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (scripts/test installs it when run as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as pw:
        found = await pw.chromium.launch(executable_path=path, headless=True)
        try:
            yield found
        finally:
            await found.close()


@pytest.fixture
async def dash(dash_settings: Settings, browser: Browser) -> AsyncIterator[Dash]:
    """Workers, a live API and a fresh browser page (not yet logged in)."""
    async with (
        system(dash_settings, registry()) as sys_,
        live_api(dash_settings, registry=registry()) as live,
    ):
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield Dash(live, sys_, page)
        finally:
            await context.close()
