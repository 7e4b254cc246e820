"""Operator actions clicked through in a real browser."""

from __future__ import annotations

from settler_jobs.domain import Tier
from settler_jobs.errors import NotFound
from settler_jobs.records import Submission, Submitted
from tests.dashboard.conftest import Dash
from tests.dashboard.kinds import FLAKY
from tests.helpers import eventually


async def _failed(dash: Dash, tenant: str) -> Submitted:
    sub = await dash.system.queue.submit(Submission("flaky", {"n": 1}, tenant, Tier.STARTER))
    await eventually(lambda: dash.system.queue.get(sub.job.id), lambda r: r.state.value == "failed")
    return sub


async def test_retry_promote_and_cancel_from_job_pages(dash: Dash) -> None:
    FLAKY.failing = True
    sub = await _failed(dash, "t-retry")
    delayed = await dash.system.queue.submit(
        Submission("echo", {}, "t-retry", Tier.STARTER, delay_s=3600)
    )
    await dash.login()
    await dash.page.goto(dash.url("/jobs?state=failed"))
    await dash.page.click(f"a[href$='/jobs/{sub.job.id}']")
    await dash.page.wait_for_selector("#retry")
    FLAKY.failing = False
    try:
        await dash.page.click("#retry")
        await dash.page.wait_for_selector("#flash")
        await eventually(
            lambda: dash.system.queue.get(sub.job.id), lambda r: r.state.value == "completed"
        )
    finally:
        FLAKY.failing = True
    await dash.page.click("#refresh")
    await dash.page.wait_for_selector("#job-state:text('completed')")

    later = await dash.system.queue.submit(
        Submission("echo", {"later": True}, "t-retry", Tier.STARTER, delay_s=3600)
    )
    await dash.page.goto(dash.url(f"/jobs/{later.job.id}"))
    await dash.page.click("#promote")
    await dash.page.wait_for_selector("#flash:text('Job promoted.')")
    await eventually(
        lambda: dash.system.queue.get(later.job.id), lambda r: r.state.value == "completed"
    )

    await dash.page.goto(dash.url(f"/jobs/{delayed.job.id}"))
    await dash.page.click("#cancel")
    await dash.page.wait_for_selector("#flash:text('Job cancelled.')")
    try:
        await dash.system.queue.get(delayed.job.id)
        raise AssertionError("the cancelled job is still there")
    except NotFound:
        pass


async def test_dead_letters_resolve_with_note_and_bulk_retry(dash: Dash) -> None:
    FLAKY.failing = True
    subs = [await _failed(dash, "t-dlq") for _ in range(3)]
    entries = await eventually(
        lambda: dash.system.dead_letters(tenant_id="t-dlq"), lambda e: len(e) == 3
    )
    by_job = {e.job_id: e for e in entries}
    first = by_job[subs[0].job.id]
    await dash.login()
    await dash.page.goto(dash.url("/dlq?tenant=t-dlq"))
    row = dash.page.locator(f"#dlq-{first.id}")
    await row.locator(".note-input").fill("known upstream outage")
    await row.locator(".resolve").click()
    await dash.page.wait_for_selector("#flash:text('Resolved.')")
    await dash.page.goto(dash.url("/dlq?tenant=t-dlq&status="))
    resolved = dash.page.locator(f"#dlq-{first.id}")
    assert await resolved.get_attribute("data-status") == "resolved"
    assert "known upstream outage" in (await resolved.locator(".notes").text_content() or "")

    await dash.page.goto(dash.url("/dlq?tenant=t-dlq"))
    for checkbox in await dash.page.locator("input.pick").all():
        await checkbox.check()
    FLAKY.failing = False
    try:
        await dash.page.click("#bulk-retry")
        await dash.page.wait_for_selector("#flash:text('Retried 2 entries')")
        after = await dash.system.dead_letters(tenant_id="t-dlq")
        retried = [e for e in after if e.status.value == "retried"]
        assert len(retried) == 2
        for e in retried:
            assert e.retried_job_id is not None
            new_id = e.retried_job_id
            await eventually(
                lambda new_id=new_id: dash.system.queue.get(new_id),  # type: ignore[misc]
                lambda r: r.state.value == "completed",
            )
    finally:
        FLAKY.failing = True
