"""Dashboard security in a real browser: login, redirects, CSRF, CSP, escaping."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Browser, Dialog

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.records import Submission
from tests.api.live import OPERATOR_TOKEN, live_api
from tests.dashboard.conftest import Dash
from tests.helpers import eventually

XSS = "<script>alert(1)</script>"


async def test_unauthenticated_pages_redirect_to_login(dash: Dash) -> None:
    for path in ("/", "/jobs", "/overview", "/dlq", "/jobs/nope"):
        await dash.page.goto(dash.url(path))
        assert dash.page.url.endswith("/dashboard/login"), path
    await dash.page.fill("#token", "wrong-token")
    await dash.page.click("#login")
    await dash.page.wait_for_selector("#login-error")


async def test_login_csp_escaping_and_logout(dash: Dash) -> None:
    dialogs: list[Dialog] = []
    dash.page.on("dialog", lambda d: dialogs.append(d))
    sub = Submission(
        "echo", {"note": XSS, "api_key": "sk_live_abcdefgh12345678"}, "t-xss", Tier.STARTER
    )
    job = (await dash.system.queue.submit(sub)).job
    await eventually(lambda: dash.system.queue.get(job.id), lambda r: r.state.value == "completed")
    await dash.login()
    response = await dash.page.goto(dash.url(f"/jobs/{job.id}"))
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    shown = await dash.page.text_content("#job-data")
    assert shown is not None and XSS in shown  # shown as text, not run
    assert "sk_live_abcdefgh12345678" not in (await dash.page.content())
    html = await dash.page.content()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script in page"
    assert dialogs == []
    cookies = await dash.page.context.cookies()
    session = next(c for c in cookies if c["name"] == "settler_dash")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    await dash.page.click("#logout")
    await dash.page.wait_for_selector("#token")
    # The old cookie no longer opens pages even if replayed.
    replay = {"settler_dash": session["value"]}
    async with httpx.AsyncClient(base_url=dash.live.url, cookies=replay) as http:
        reply = await http.get("/dashboard/jobs")
        assert reply.status_code == 303


async def test_post_without_csrf_token_is_refused(dash: Dash) -> None:
    sub = Submission("flaky", {}, "t-csrf", Tier.STARTER)
    job = (await dash.system.queue.submit(sub)).job
    await eventually(lambda: dash.system.queue.get(job.id), lambda r: r.state.value == "failed")
    await dash.login()
    request = dash.page.context.request
    refused = await request.post(dash.url(f"/jobs/{job.id}/retry"), form={"csrf": "forged"})
    assert refused.status == 403
    bare = await request.post(dash.url(f"/jobs/{job.id}/retry"))
    assert bare.status == 403
    assert (await dash.system.queue.get(job.id)).state.value == "failed"


async def test_login_form_is_csrf_protected_and_failures_are_limited(dash: Dash) -> None:
    async with httpx.AsyncClient(base_url=dash.live.url) as http:
        forged = await http.post("/dashboard/login", data={"token": OPERATOR_TOKEN})
        assert forged.status_code == 403
        assert "settler_dash" not in forged.cookies
        statuses = []
        for _ in range(12):
            page = await http.get("/dashboard/login")
            nonce = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert nonce is not None
            reply = await http.post(
                "/dashboard/login", data={"token": "wrong", "csrf": nonce.group(1)}
            )
            statuses.append(reply.status_code)
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]


async def test_login_is_refused_while_no_operator_token_is_set(
    settings: Settings, browser: Browser
) -> None:
    async with live_api(settings) as live:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(f"{live.url}/dashboard/jobs")
            await page.wait_for_selector("#login-disabled")
            notice = await page.text_content("#login-disabled")
            assert notice is not None and "SETTLER_OPERATOR_TOKEN" in notice
            assert await page.locator("#token").count() == 0
        finally:
            await context.close()
