"""The read-only pages show what the system holds."""

from __future__ import annotations

from playwright.async_api import expect

from settler_jobs.alerts import depth_history
from settler_jobs.domain import Tier
from settler_jobs.records import Submission
from settler_jobs.shared_state import RedisState
from tests.dashboard.conftest import Dash
from tests.helpers import eventually


async def test_overview_workers_tenants_schedules_and_job_search(dash: Dash) -> None:
    await dash.live.directory.create_tenant("t-pages", Tier.GROWTH)
    queue = dash.system.redis_queue
    subs = [
        await queue.submit(Submission("echo", {"i": i}, "t-pages", Tier.GROWTH)) for i in range(3)
    ]
    for sub in subs:
        await eventually(lambda s=sub: queue.get(s.job.id), lambda r: r.state.value == "completed")  # type: ignore[misc]
    # The workers' depth loop samples once a minute; wait for a sample to exist.
    await eventually(
        lambda: depth_history.read(RedisState(queue.client), queue.key_prefix, ["echo"], 60),
        lambda found: bool(found["echo"]),
    )
    await dash.login()
    await dash.page.goto(dash.url("/overview"))
    assert int(await dash.page.text_content("#hour-done") or "0") >= 3
    echo_row = dash.page.locator("#kinds-table tr[data-kind='echo'] td")
    assert await echo_row.nth(4).text_content() == "3"  # completed
    assert await dash.page.locator("#throughput-chart rect.bar-ok").count() == 60
    assert await dash.page.locator("#depth-chart polyline").count() == 1

    await dash.page.click("nav a[href$='/workers']")
    await dash.page.wait_for_selector("#workers-table .worker-row")

    await dash.page.click("nav a[href$='/tenants']")
    row = dash.page.locator("#tenant-t-pages")
    await row.wait_for()
    assert "growth" in (await row.text_content() or "")

    await dash.page.click("nav a[href$='/schedules']")
    await dash.page.wait_for_selector("#schedules-table")

    await dash.page.click("nav a[href$='/jobs']")
    await dash.page.fill("input[name='tenant']", "t-pages")
    await dash.page.select_option("#filter-state", "completed")
    await dash.page.click("#filter-submit")  # htmx swaps the table in place
    await expect(dash.page.locator("#jobs-table .job-row")).to_have_count(3)
    await dash.page.fill("#search-id", subs[0].job.id)
    await dash.page.press("#search-id", "Enter")
    await dash.page.wait_for_selector(f"#job-id:text('{subs[0].job.id}')")

    await dash.page.goto(dash.url("/webhooks?tenant=t-pages"))
    await dash.page.wait_for_selector("#deliveries-table")


async def test_job_pages_follow_the_cursor(dash: Dash) -> None:
    subs = [Submission("echo", {"i": i}, "t-paging", Tier.STARTER, delay_s=3600) for i in range(55)]
    await dash.system.queue.submit_bulk(subs)
    await dash.login()
    await dash.page.goto(dash.url("/jobs?state=delayed&kind=echo"))
    rows = dash.page.locator("#jobs-table .job-row")
    await expect(rows).to_have_count(50)
    await dash.page.click("#next-page")
    await expect(rows).to_have_count(5)
    assert await dash.page.locator("#next-page").count() == 0


async def test_tenants_page_shows_quota_use_and_cap(dash: Dash) -> None:
    await dash.live.directory.create_tenant("t-fair", Tier.FREE)
    queue = dash.system.queue
    for i in range(4):  # delayed: waiting against the quota, not run during the test
        await queue.submit(Submission("echo", {"i": i}, "t-fair", Tier.FREE, delay_s=3600))
    await dash.login()
    await dash.page.goto(dash.url("/tenants"))
    row = dash.page.locator("#tenant-t-fair")
    await row.wait_for()
    quota = dash.system.settings.tenant_backlog_quotas["free"]
    cap = dash.system.settings.tenant_concurrency_caps["free"]
    assert (await row.locator(".quota-use").text_content() or "").strip() == f"4 / {quota}"
    assert (await row.locator(".cap-use").text_content() or "").strip() == f"0 / {cap}"
    assert (await row.locator(".cap-hits").text_content() or "").strip() == "0"
