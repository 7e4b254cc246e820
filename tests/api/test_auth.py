"""Authentication: tenant keys (hashed, revocable at once) and the operator token."""

from __future__ import annotations

from pydantic import SecretStr

from settler_jobs.config import Settings
from settler_jobs.storage.db import create_engine, session_factory
from settler_jobs.storage.tenant_tables import ApiKeyRow
from tests.api.live import OPERATOR, LiveApi, auth, live_api


async def test_missing_malformed_and_unknown_keys_are_refused_alike(api: LiveApi) -> None:
    key = await api.tenant_key("acme")
    key_id = key.split("_")[2]
    answers = [
        await api.http.get("/v1/jobs", headers=headers)
        for headers in (
            {},
            {"Authorization": "Basic abc"},
            auth("not-a-key"),
            auth(f"sk_live_{key_id}_wrong-secret"),
            auth("sk_live_ffffffffffffffff_" + key.rsplit("_", 1)[1]),
        )
    ]
    assert {(r.status_code, r.text) for r in answers} == {
        (401, '{"error":"unauthorized","detail":"invalid or revoked API key"}')
    }
    assert all(r.headers["www-authenticate"] == "Bearer" for r in answers)
    assert (await api.http.get("/v1/jobs", headers=auth(key))).status_code == 200


async def test_revoked_key_is_refused_on_the_next_request(api: LiveApi) -> None:
    key = await api.tenant_key("acme")
    other_key, other_plain = await api.directory.create_key("acme", name="second")
    assert (await api.http.get("/v1/jobs", headers=auth(key))).status_code == 200
    await api.directory.revoke_key(key.split("_")[2])
    assert (await api.http.get("/v1/jobs", headers=auth(key))).status_code == 401
    # The tenant's other key still works.
    assert (await api.http.get("/v1/jobs", headers=auth(other_plain))).status_code == 200
    assert other_key.active


async def test_only_a_hash_of_the_secret_is_stored(api_settings: Settings, api: LiveApi) -> None:
    key = await api.tenant_key("acme")
    engine = create_engine(api_settings.effective_database_url)
    try:
        async with session_factory(engine)() as session:
            row = await session.get(ApiKeyRow, key.split("_")[2])
    finally:
        await engine.dispose()
    assert row is not None
    secret = key.split("_", 3)[3]  # the secret itself may contain "_"
    assert secret not in row.secret_hash and key not in row.secret_hash
    assert len(row.secret_hash) == 64


async def test_admin_routes_take_the_operator_token_only(api: LiveApi) -> None:
    key = await api.tenant_key("acme")
    assert (await api.http.get("/v1/admin/queues", headers=auth(key))).status_code == 401
    assert (await api.http.get("/v1/admin/dlq", headers=auth("wrong"))).status_code == 401
    assert (await api.http.get("/v1/admin/queues", headers=OPERATOR)).status_code == 200
    # The operator token is no tenant key.
    assert (await api.http.get("/v1/jobs", headers=OPERATOR)).status_code == 401


async def test_admin_routes_are_off_without_an_operator_token(settings: Settings) -> None:
    async with live_api(settings) as live:
        answer = await live.http.get("/v1/admin/queues", headers=auth("anything"))
    assert answer.status_code == 401
    assert answer.json()["detail"] == "operator access is not configured"


async def test_operator_token_comes_from_settings(settings: Settings) -> None:
    token = "another-operator-token"
    custom = settings.model_copy(update={"operator_token": SecretStr(token)})
    async with live_api(custom) as live:
        assert (await live.http.get("/v1/admin/dlq", headers=auth(token))).status_code == 200
