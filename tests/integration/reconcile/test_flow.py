"""Reconciliations end to end in one process: upload -> define -> run (a queued job on the
worker runtime, matching in its process pool) -> results in the database -> a
`reconciliation.completed` / `.failed` event at a real, signature-verifying receiver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from settler_jobs.config import Settings
from settler_jobs.domain import JobState, Tier
from settler_jobs.emails.outbox import list_outbox, read_outbox
from settler_jobs.errors import InvalidJob, NotFound
from settler_jobs.exports.service import Exports
from settler_jobs.keyring import secret_box
from settler_jobs.reconcile.service import Reconciliations
from settler_jobs.reconcile.store import Run
from settler_jobs.registry import default_registry
from settler_jobs.storage.files import object_store
from settler_jobs.tenants.directory import TenantDirectory
from settler_jobs.webhooks.service import Webhooks
from tests.harness import System, system
from tests.helpers import eventually
from tests.webhook_receiver import WebhookReceiver

TENANT = "acme"
HEADER = "id,amount,currency,date,description,reference\n"
# Ground truth: ch_1 matches by id; ch_2 differs in amount (a discrepancy); ch_3 matches
# bk_3 within the tolerance and date window; ch_4 (a refund) and bk_9 stay unmatched.
CHARGES = HEADER + (
    "ch_1,10.00,EUR,2026-11-02,order 1,\n"
    "ch_2,20.00,EUR,2026-11-02,order 2,\n"
    "ch_3,7.50,EUR,2026-11-03,order 3,\n"
    "ch_4,-3.00,EUR,2026-11-03,refund,\n"
)
BANK = HEADER + (
    "ch_1,10.00,EUR,2026-11-02,payout,\n"
    "ch_2,19.00,EUR,2026-11-02,payout,\n"
    "bk_3,7.49,EUR,2026-11-05,transfer,\n"
    "bk_9,99.00,EUR,2026-11-20,unrelated,\n"
)
FILE = {"kind": "file", "format": "csv"}
RULES = {"amount_tolerance_minor": 2, "date_window_days": 3}


@dataclass
class Flow:
    system: System
    recs: Reconciliations
    receiver: WebhookReceiver

    async def finished(self, timeout_s: float = 60.0) -> Run:
        async def runs() -> list[Run]:
            return await self.recs.list_runs(TENANT)

        done = await eventually(
            runs,
            lambda rs: bool(rs) and rs[0].status in ("succeeded", "failed"),
            timeout_s=timeout_s,
        )
        return done[0]


async def _finished_export(exports: Exports, tenant: str, export_id: str) -> Any:
    async def probe() -> Any:
        return await exports.get_export(tenant, export_id)

    return await eventually(
        probe, lambda e: e.status.value in ("succeeded", "failed"), timeout_s=30
    )


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Flow]:
    local = settings.model_copy(
        update={"outbound_allow_http": True, "outbound_allow_networks": ["127.0.0.1/32"]}
    )
    kinds = ["reconciliation", "webhook-delivery", "export-generation", "email-sending"]
    registry = default_registry().select(kinds)
    async with WebhookReceiver() as receiver, system(local, registry) as sys_:
        await TenantDirectory(sys_.sessions).create_tenant(
            TENANT, Tier.GROWTH, contact_email="books@acme.example"
        )
        box = secret_box(local)
        recs = Reconciliations(local, sys_.sessions, sys_.queue, box)
        hooks = Webhooks.from_settings(local, sys_.sessions, sys_.queue)
        _, secret = await hooks.create_endpoint(
            TENANT,
            receiver.url(),
            event_types=["reconciliation.completed", "reconciliation.failed"],
        )
        receiver.secrets.append(secret)
        yield Flow(sys_, recs, receiver)


async def test_a_run_matches_stores_results_and_announces_them(flow: Flow) -> None:
    await flow.recs.upload(TENANT, "charges.csv", CHARGES.encode())
    await flow.recs.upload(TENANT, "bank.csv", BANK.encode())
    definition = await flow.recs.create(
        TENANT,
        "stripe vs bank",
        source=FILE | {"path": "charges.csv"},
        target=FILE | {"path": "bank.csv"},
        rules=RULES,
    )
    submitted = await flow.recs.run(TENANT, definition.id, tier=Tier.GROWTH)
    assert submitted.job.payload == {"definitionId": definition.id}
    run = await flow.finished()
    assert run.status == "succeeded" and run.definition_id == definition.id
    assert (run.matched, run.discrepancies) == (2, 1)
    assert (run.unmatched_source, run.unmatched_target) == (1, 1)
    matches = await flow.recs.results(TENANT, run.id, "matches")
    assert sorted(m.rule for m in matches.items) == ["exact_id", "tolerance"]
    assert all(0 <= m.confidence <= 1 for m in matches.items)
    (discrepancy,) = (await flow.recs.results(TENANT, run.id, "discrepancies")).items
    assert (discrepancy.source_amount, discrepancy.target_amount) == (2000, 1900)
    (refund,) = (await flow.recs.results(TENANT, run.id, "unmatched-source")).items
    assert refund.amount == -300 and refund.reason
    job = await eventually(
        lambda: flow.system.queue.get(submitted.job.id),
        lambda j: j.state is JobState.COMPLETED,
    )
    assert job.progress == 100
    assert job.result is not None and job.result["runId"] == run.id

    (seen,) = await flow.receiver.wait_for(1)
    event = seen.json()
    assert seen.verified and event["type"] == "reconciliation.completed"
    assert event["data"]["runId"] == run.id and event["data"]["matched"] == 2

    # The tenant's contact is told by email (once per run).
    outbox = flow.system.settings.outbox_dir

    async def mails() -> list[Any]:
        return list_outbox(outbox)

    (mail,) = await eventually(mails, bool, timeout_s=20)
    text = read_outbox(outbox, mail.name)
    assert "books@acme.example" in text and run.id in text

    # The results export through the export kind, one file per result set.
    sys_ = flow.system
    exports = Exports(sys_.sessions, sys_.queue, object_store(sys_.settings))
    for dataset, filters, rows in (
        ("reconciliation_matches", {"run_id": run.id}, 2),
        ("reconciliation_unmatched", {"run_id": run.id, "side": "source"}, 1),
    ):
        export = await exports.create_export(TENANT, dataset, "csv", filters)
        done = await _finished_export(exports, TENANT, export.id)
        assert (done.status.value, done.row_count) == ("succeeded", rows), done.error
    other = await exports.create_export(
        "globex", "reconciliation_matches", "csv", {"run_id": run.id}
    )
    empty = await eventually(
        lambda: exports.get_export("globex", other.id),
        lambda e: e.status.value == "succeeded",
        timeout_s=30,
    )
    assert empty.row_count == 0  # another tenant's run exports nothing


async def test_a_missing_source_fails_the_run_and_announces_it(flow: Flow) -> None:
    definition = await flow.recs.create(
        TENANT,
        "nothing uploaded",
        source=FILE | {"path": "absent.csv"},
        target=FILE | {"path": "absent-too.csv"},
    )
    await flow.recs.run(TENANT, definition.id)
    run = await flow.finished()
    assert run.status == "failed" and run.error
    (seen,) = await flow.receiver.wait_for(1)
    assert seen.json()["type"] == "reconciliation.failed"
    (entry,) = await eventually(
        lambda: flow.system.dead_letters(kind="reconciliation"), bool, timeout_s=15
    )
    assert entry.tenant_id == TENANT and entry.error_type == "PermanentFailure"


async def test_tenants_and_inputs_are_checked(flow: Flow) -> None:
    definition = await flow.recs.create(
        TENANT, "mine", source=FILE | {"path": "a.csv"}, target=FILE | {"path": "b.csv"}
    )
    with pytest.raises(NotFound):
        await flow.recs.run("globex", definition.id)
    with pytest.raises(NotFound):
        await flow.recs.get_definition("globex", definition.id)
    assert await flow.recs.list_definitions("globex") == []
    for name in ("../escape.csv", ".hidden", "a/b.csv", ""):
        with pytest.raises(InvalidJob):
            await flow.recs.upload(TENANT, name, b"x")
    with pytest.raises(InvalidJob, match="source"):
        await flow.recs.create(
            TENANT, "bad", source={"kind": "file", "format": "xlsx", "path": "a"}, target=FILE
        )
    assert not (flow.system.settings.files_dir / "escape.csv").exists()
