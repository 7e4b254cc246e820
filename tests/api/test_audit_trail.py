"""Every successful state-changing API request lands in the audit log; reads do not."""

from __future__ import annotations

from settler_jobs.audit import list_audit
from settler_jobs.config import Settings
from tests.api.kinds import registry
from tests.api.live import OPERATOR, auth, live_api


async def test_changes_are_audited_with_actor_tenant_action_and_target(
    api_settings: Settings,
) -> None:
    async with live_api(api_settings, registry=registry()) as live:
        key = await live.tenant_key("acme", "growth")
        h = auth(key)
        submitted = await live.http.post(
            "/v1/jobs", json={"kind": "echo", "data": {"n": 1}}, headers=h
        )
        job_id = submitted.json()["job"]["id"]
        assert (await live.http.post(f"/v1/jobs/{job_id}/cancel", headers=h)).status_code == 200
        assert (await live.http.get("/v1/jobs", headers=h)).status_code == 200
        refused = await live.http.post("/v1/jobs", json={"kind": "nope"}, headers=h)
        assert refused.status_code >= 400
        paused = await live.http.post("/v1/admin/queues/echo/pause", headers=OPERATOR)
        assert paused.status_code == 200

        sessions = live.app.state.ctx.services.sessions
        async with sessions() as session:
            tenant_rows = await list_audit(session, tenant_id="acme")
            system_rows = await list_audit(session, tenant_id=None)
    actions = [(r.action, r.target_type, r.target_id) for r in reversed(tenant_rows)]
    assert actions == [
        ("POST /v1/jobs", None, None),
        ("POST /v1/jobs/{job_id}/cancel", "job_id", job_id),
    ]
    assert all(r.actor.startswith("key:") and key not in r.actor for r in tenant_rows)
    assert [(r.actor, r.action) for r in system_rows] == [
        ("operator", "POST /v1/admin/queues/{kind}/pause")
    ]
