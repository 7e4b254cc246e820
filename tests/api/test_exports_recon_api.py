"""Exports and reconciliations over HTTP, with real workers behind the live API."""

from __future__ import annotations

from typing import Any

from settler_jobs.config import Settings
from settler_jobs.registry import default_registry
from tests.api.live import auth, live_api
from tests.harness import system
from tests.helpers import eventually

HEADER = "id,amount,currency,date,description,reference\n"
CHARGES = HEADER + "ch_1,10.00,EUR,2026-11-02,a,\nch_2,5.00,EUR,2026-11-02,b,\n"
BANK = HEADER + "ch_1,10.00,EUR,2026-11-02,a,\nbk_7,4.00,EUR,2026-11-09,c,\n"


async def test_export_is_created_polled_and_downloaded_through_a_signed_link(
    api_settings: Settings,
) -> None:
    registry = default_registry().select(["export-generation"])
    async with system(api_settings, registry), live_api(api_settings, registry=registry) as live:
        h = auth(await live.tenant_key("acme", "growth"))
        other = auth(await live.tenant_key("globex"))
        body = {"dataset": "audit_log", "format": "csv"}
        first = await live.http.post("/v1/exports", json=body, headers=h)
        assert first.status_code == 201, first.text  # its audit row is the next one's data
        created = await live.http.post("/v1/exports", json=body, headers=h)
        export_id = created.json()["id"]
        early = await live.http.post(f"/v1/exports/{export_id}/link", headers=h)
        assert early.status_code in (200, 409)

        async def status() -> Any:
            return (await live.http.get(f"/v1/exports/{export_id}", headers=h)).json()

        done = await eventually(status, lambda e: e["status"] == "succeeded", timeout_s=30)
        assert done["row_count"] >= 1 and done["sha256"]
        link = await live.http.post(f"/v1/exports/{export_id}/link", headers=h)
        assert link.status_code == 200
        url = link.json()["url"]
        downloaded = await live.http.get(url)  # no credentials: the link is the capability
        assert downloaded.status_code == 200
        assert "export.create" in downloaded.content.decode("utf-8-sig")
        assert downloaded.headers["content-disposition"].endswith(f'{export_id}.csv"')

        tampered = await live.http.get(url.replace("tenant=acme", "tenant=globex"))
        assert tampered.status_code == 403
        forged = await live.http.get(url[:-4] + "0000")
        assert forged.status_code == 403
        hidden = await live.http.get(f"/v1/exports/{export_id}", headers=other)
        assert hidden.status_code == 404
        assert (
            await live.http.post(f"/v1/exports/{export_id}/link", headers=other)
        ).status_code == 404
        bad = await live.http.post("/v1/exports", json={"dataset": "nope"}, headers=h)
        assert bad.status_code in (404, 422)


async def test_reconciliation_is_defined_run_and_paged(api_settings: Settings) -> None:
    registry = default_registry().select(["reconciliation"])
    async with system(api_settings, registry), live_api(api_settings, registry=registry) as live:
        h = auth(await live.tenant_key("acme", "scale"))
        other = auth(await live.tenant_key("globex"))
        for name, text in (("charges.csv", CHARGES), ("bank.csv", BANK)):
            put = await live.http.put(
                f"/v1/reconciliations/files/{name}", content=text.encode(), headers=h
            )
            assert put.status_code == 201, put.text
        traversal = await live.http.put(
            "/v1/reconciliations/files/..%2Fescape.csv", content=b"x", headers=h
        )
        assert traversal.status_code in (404, 422)
        file = {"kind": "file", "format": "csv"}
        created = await live.http.post(
            "/v1/reconciliations",
            json={
                "name": "stripe vs bank",
                "source": file | {"path": "charges.csv"},
                "target": file | {"path": "bank.csv"},
            },
            headers=h,
        )
        assert created.status_code == 201, created.text
        definition_id = created.json()["id"]
        started = await live.http.post(f"/v1/reconciliations/{definition_id}/runs", headers=h)
        assert started.status_code == 202

        async def runs() -> Any:
            return (await live.http.get("/v1/reconciliations/runs", headers=h)).json()

        (run,) = await eventually(
            runs, lambda rs: bool(rs) and rs[0]["status"] == "succeeded", timeout_s=60
        )
        assert (run["matched"], run["unmatched_source"], run["unmatched_target"]) == (1, 1, 1)
        page = await live.http.get(
            f"/v1/reconciliations/runs/{run['id']}/matches?limit=10", headers=h
        )
        assert page.status_code == 200
        (match,) = page.json()["items"]
        assert match["rule"] == "exact_id" and page.json()["next_after"] is None

        for path in (
            f"/v1/reconciliations/{definition_id}",
            f"/v1/reconciliations/runs/{run['id']}",
        ):
            assert (await live.http.get(path, headers=other)).status_code == 404
        foreign_run = await live.http.post(
            f"/v1/reconciliations/{definition_id}/runs", headers=other
        )
        assert foreign_run.status_code == 404
        bad = await live.http.post(
            "/v1/reconciliations",
            json={"name": "x", "source": {"kind": "ftp"}, "target": file | {"path": "a"}},
            headers=h,
        )
        assert bad.status_code == 422
