"""The reconciliation store against real databases: SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.net_guard import GuardPolicy
from settler_jobs.reconcile import FileSource, HttpSource, MatchRules, SqlSource
from settler_jobs.reconcile import results as rr
from settler_jobs.reconcile import store as rs
from settler_jobs.reconcile.execute import execute_run
from settler_jobs.reconcile.run import ReconciliationResult, run_reconciliation
from settler_jobs.secrets_box import SecretBox
from settler_jobs.storage.reconcile_tables import (
    ReconciliationDefinitionRow,
    ReconciliationMatchRow,
    ReconciliationUnmatchedRow,
)

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BOX = SecretBox.from_key(SecretBox.generate_key())
DSN = "postgresql://reader:s3cret-pw@db.example.com/ledger"
HEADER = "id,amount,currency,date,description,reference\n"
SOURCE = FileSource(format="csv", path="bank.csv")
TARGET = FileSource(format="csv", path="ledger.csv")


def result(root: Path, pairs: int, extra_source: int = 0) -> ReconciliationResult:
    """`pairs` exact-id matches plus `extra_source` unmatched and one malformed source row."""
    bank = [
        f"m{i},{i}.25,USD,2026-01-{1 + i % 28:02d}T10:00:00+01:00,pay {i},R{i}"
        for i in range(pairs)
    ]
    bank += [f"u{i},-{i}.5,KWD,2026-02-01,refund,," for i in range(extra_source)]
    bank.append("bad,12.345,USD,2026-01-01,,")
    ledger = [f"m{i},{i}.25,USD,2026-01-{1 + i % 28:02d},,," for i in range(pairs)]
    (root / "bank.csv").write_text(HEADER + "\n".join(bank) + "\n")
    (root / "ledger.csv").write_text(HEADER + "\n".join(ledger) + "\n")
    return run_reconciliation(SOURCE, TARGET, MatchRules(), files_root=root)


async def definition(sessions: Sessions, tenant: str = "tenant-a") -> rs.Definition:
    async with sessions() as session, session.begin():
        return await rs.create_definition(
            session,
            BOX,
            tenant_id=tenant,
            name="bank vs ledger",
            source=SqlSource(url=DSN, query="SELECT * FROM payments"),
            target=HttpSource(url="https://api.example.com/tx", headers={"Authorization": "k1"}),
            rules=MatchRules(amount_tolerance_minor=3),
            now=T0,
        )


async def saved_run(sessions: Sessions, res: ReconciliationResult, job: str = "job-1") -> rs.Run:
    made = await definition(sessions)
    async with sessions() as session, session.begin():
        run = await rs.ensure_run(
            session, tenant_id="tenant-a", definition_id=made.id, job_id=job, now=T0
        )
        await rs.start_run(session, run.id, now=T0)
        return await rr.save_results(session, run.id, res, now=T0 + timedelta(seconds=3))


async def test_definitions_seal_secrets_and_show_them_to_nobody(
    db_session_factory: Sessions,
) -> None:
    made = await definition(db_session_factory)
    assert made.source["url"] == rs.SECRET_SHOWN and made.target["headers"] == rs.SECRET_SHOWN
    assert made.source["query"] == "SELECT * FROM payments"
    async with db_session_factory() as session:
        row = await session.get(ReconciliationDefinitionRow, made.id)
        assert row is not None and "url" not in row.source_config
        stored = repr(vars(row))
        assert "s3cret-pw" not in stored and "k1'" not in stored
        source, target, rules = await rs.reveal_specs(session, BOX, made.id, tenant_id="tenant-a")
        assert isinstance(source, SqlSource) and source.url == DSN
        assert isinstance(target, HttpSource) and target.headers == {"Authorization": "k1"}
        assert rules.amount_tolerance_minor == 3
        shown = await rs.get_definition(session, made.id, tenant_id="tenant-a")
        assert shown == made
        assert [d.id for d in await rs.list_definitions(session, tenant_id="tenant-a")] == [made.id]
        assert await rs.list_definitions(session, tenant_id="tenant-b") == []


async def test_names_are_unique_per_tenant(db_session_factory: Sessions) -> None:
    await definition(db_session_factory)
    with pytest.raises(errors.InvalidState):
        await definition(db_session_factory)
    await definition(db_session_factory, tenant="tenant-b")


async def test_a_run_stores_its_results_and_summary(
    db_session_factory: Sessions, tmp_path: Path
) -> None:
    res = result(tmp_path, pairs=3, extra_source=2)
    run = await saved_run(db_session_factory, res)
    assert (run.status, run.progress, run.matched, run.unmatched_source) == ("succeeded", 1.0, 3, 3)
    assert run.malformed_source == 1 and run.duration_ms == res.summary.duration_ms
    assert run.totals == {
        "KWD": {
            "matched_source": 0,
            "matched_target": 0,
            "unmatched_source": -2000,
            "unmatched_target": 0,
        },
        "USD": {
            "matched_source": 375,
            "matched_target": 375,
            "unmatched_source": 0,
            "unmatched_target": 0,
        },
    }
    async with db_session_factory() as session:
        page = await rr.list_matches(session, run.id, tenant_id="tenant-a")
        first = page.items[0]
        assert (first.rule, first.source_id, first.source_amount) == ("exact_id", "m0", 25)
        assert first.source_at == datetime(2026, 1, 1, 9, tzinfo=UTC)
        assert first.target_at == datetime(2026, 1, 1, tzinfo=UTC)
        unmatched = await rr.list_unmatched(session, run.id, tenant_id="tenant-a", side="source")
        assert [(u.line, u.reason) for u in unmatched.items] == [
            (5, "no_candidate"),
            (6, "no_candidate"),
            (7, "malformed"),
        ]
        assert unmatched.items[2].detail == (
            "amount '12.345' has more decimals than USD allows (2)"
        )


async def test_saving_again_replaces_the_results(
    db_session_factory: Sessions, tmp_path: Path
) -> None:
    run = await saved_run(db_session_factory, result(tmp_path, pairs=5))
    async with db_session_factory() as session, session.begin():
        again = await rs.ensure_run(
            session, tenant_id="tenant-a", definition_id=run.definition_id, job_id="job-1", now=T0
        )
        assert again.id == run.id  # a retried job finds its run
        await rs.start_run(session, run.id, now=T0)
        await rr.save_results(session, run.id, result(tmp_path, pairs=2), now=T0)
    async with db_session_factory() as session:
        count = select(func.count()).where(ReconciliationMatchRow.run_id == run.id)
        assert await session.scalar(count.select_from(ReconciliationMatchRow)) == 2
        left = select(func.count()).where(ReconciliationUnmatchedRow.run_id == run.id)
        assert await session.scalar(left.select_from(ReconciliationUnmatchedRow)) == 1
        assert (await rs.get_run(session, run.id, tenant_id="tenant-a")).matched == 2


async def test_results_page_in_order(db_session_factory: Sessions, tmp_path: Path) -> None:
    run = await saved_run(db_session_factory, result(tmp_path, pairs=5))
    seen, after = [], -1
    async with db_session_factory() as session:
        while True:
            page = await rr.list_matches(
                session, run.id, tenant_id="tenant-a", after=after, limit=2
            )
            seen.append([m.source_id for m in page.items])
            if page.next_after is None:
                break
            after = page.next_after
    assert seen == [["m0", "m1"], ["m2", "m3"], ["m4"]]


async def test_other_tenants_get_not_found(db_session_factory: Sessions, tmp_path: Path) -> None:
    run = await saved_run(db_session_factory, result(tmp_path, pairs=1))
    async with db_session_factory() as session:
        with pytest.raises(errors.NotFound):
            await rs.get_run(session, run.id, tenant_id="tenant-b")
        with pytest.raises(errors.NotFound):
            await rr.list_matches(session, run.id, tenant_id="tenant-b")
        with pytest.raises(errors.NotFound):
            await rr.list_unmatched(session, run.id, tenant_id="tenant-b", side="target")
        with pytest.raises(errors.NotFound):
            await rr.list_discrepancies(session, run.id, tenant_id="tenant-b")
        with pytest.raises(errors.NotFound):
            await rs.get_definition(session, run.definition_id, tenant_id="tenant-b")
        with pytest.raises(errors.NotFound):
            await rs.reveal_specs(session, BOX, run.definition_id, tenant_id="tenant-b")
        assert await rs.list_runs(session, tenant_id="tenant-b") == []
        assert [r.id for r in await rs.list_runs(session, tenant_id="tenant-a")] == [run.id]


async def test_progress_and_failure_are_recorded(db_session_factory: Sessions) -> None:
    made = await definition(db_session_factory)
    async with db_session_factory() as session, session.begin():
        run = await rs.ensure_run(
            session, tenant_id="tenant-a", definition_id=made.id, job_id=None, now=T0
        )
        await rs.start_run(session, run.id, now=T0)
        await rs.record_progress(session, run.id, 0.3, "reading target", now=T0)
        progressed = await rs.get_run(session, run.id, tenant_id="tenant-a")
        assert (progressed.status, progressed.progress, progressed.stage) == (
            "running",
            0.3,
            "reading target",
        )
        await rs.fail_run(session, run.id, "file 'x.csv' does not exist", now=T0 + timedelta(1))
        failed = await rs.get_run(session, run.id, tenant_id="tenant-a")
    assert (failed.status, failed.error, failed.duration_ms) == (
        "failed",
        "file 'x.csv' does not exist",
        86_400_000,
    )


async def test_a_job_runs_a_definition_and_a_retry_replaces_its_results(
    db_session_factory: Sessions, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    (files / "tenant-a").mkdir(parents=True)
    result(files / "tenant-a", pairs=4)
    async with db_session_factory() as session, session.begin():
        made = await rs.create_definition(
            session,
            BOX,
            tenant_id="tenant-a",
            name="files",
            source=SOURCE,
            target=TARGET,
            rules=MatchRules(),
            now=T0,
        )
    # forkserver, as the worker does: forking a process that runs threads is unsafe.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        for _attempt in range(2):
            run = await execute_run(
                db_session_factory,
                BOX,
                tenant_id="tenant-a",
                definition_id=made.id,
                job_id="job-9",
                files_dir=files,
                policy=GuardPolicy(),
                executor=pool,
                clock=lambda: T0,
            )
    assert (run.status, run.matched, run.malformed_source) == ("succeeded", 4, 1)
    async with db_session_factory() as session:
        assert [r.id for r in await rs.list_runs(session, tenant_id="tenant-a")] == [run.id]
        page = await rr.list_matches(session, run.id, tenant_id="tenant-a", limit=10)
        assert len(page.items) == 4


async def test_a_job_whose_source_is_missing_fails_permanently(
    db_session_factory: Sessions, tmp_path: Path
) -> None:
    async with db_session_factory() as session, session.begin():
        made = await rs.create_definition(
            session,
            BOX,
            tenant_id="tenant-a",
            name="files",
            source=SOURCE,
            target=TARGET,
            rules=MatchRules(),
            now=T0,
        )
    with pytest.raises(errors.PermanentFailure, match="does not exist"):
        await execute_run(
            db_session_factory,
            BOX,
            tenant_id="tenant-a",
            definition_id=made.id,
            job_id="job-1",
            files_dir=tmp_path,
            policy=GuardPolicy(),
            clock=lambda: T0,
        )
    async with db_session_factory() as session:
        (run,) = await rs.list_runs(session, tenant_id="tenant-a")
    assert run.status == "failed" and "bank.csv" in (run.error or "")


async def test_a_save_that_rolls_back_leaves_the_previous_results(
    db_session_factory: Sessions, tmp_path: Path
) -> None:
    run = await saved_run(db_session_factory, result(tmp_path, pairs=3))
    with pytest.raises(RuntimeError):
        async with db_session_factory() as session, session.begin():
            await rr.save_results(session, run.id, result(tmp_path, pairs=6), now=T0)
            raise RuntimeError("the job died before committing")
    async with db_session_factory() as session:
        page = await rr.list_matches(session, run.id, tenant_id="tenant-a", limit=100)
        assert [m.source_id for m in page.items] == ["m0", "m1", "m2"]
