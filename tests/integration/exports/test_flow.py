"""Exports end to end in one process: API -> queue -> worker -> file -> download.

Also the error log written for dead jobs, and the worker surviving an error log that
cannot be written.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, cast

import pytest
from pypdf import PdfReader
from sqlalchemy import insert, text

from settler_jobs.audit import record_audit
from settler_jobs.clock import utc_now
from settler_jobs.config import Settings
from settler_jobs.context import JobContext
from settler_jobs.dlq import error_log
from settler_jobs.domain import RetryPolicy, Tier
from settler_jobs.errors import InvalidJob, InvalidState, NotFound, PermanentFailure
from settler_jobs.exports import store as export_store
from settler_jobs.exports.generate import Limits, generate
from settler_jobs.exports.service import Exports
from settler_jobs.exports.store import Export, ExportFormat, ExportStatus
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.records import Submission
from settler_jobs.registry import default_registry
from settler_jobs.storage.audit_tables import ErrorLogRow
from settler_jobs.storage.files import LocalStore, iter_chunks
from tests.harness import System, system
from tests.helpers import eventually


@dataclass
class Setup:
    sys: System
    exports: Exports
    objects: LocalStore


@pytest.fixture
async def setup(settings: Settings) -> AsyncIterator[Setup]:
    registry = default_registry().select(["export-generation"])
    async with system(settings, registry) as sys_:
        objects = LocalStore(settings.files_dir)
        yield Setup(sys_, Exports(sys_.sessions, sys_.queue, objects), objects)


async def _seed(setup: Setup, tenant: str, actions: list[str], **details: Any) -> None:
    async with setup.sys.sessions() as session, session.begin():
        for i, action in enumerate(actions):
            await record_audit(
                session,
                actor="seed",
                tenant_id=tenant,
                action=action,
                target=("thing", f"{tenant}-{i}"),
                details=details,
            )


async def _finished(setup: Setup, tenant: str, export_id: str) -> Export:
    return await eventually(
        lambda: setup.exports.get_export(tenant, export_id),
        lambda e: e.status in (ExportStatus.SUCCEEDED, ExportStatus.FAILED),
        timeout_s=30,
    )


async def _download(setup: Setup, tenant: str, export_id: str) -> bytes:
    handle = await setup.exports.open_download(tenant, export_id)
    return b"".join(handle.chunks())


async def test_a_csv_export_holds_only_the_tenants_filtered_rows(setup: Setup) -> None:
    await _seed(setup, "acme", ["x.keep", "x.drop", "x.keep"], note="=HYPERLINK(1)")
    await _seed(setup, "other", ["x.keep"] * 5)
    created = await setup.exports.create_export("acme", "audit_log", "csv", {"action": "x.keep"})
    assert created.job_id  # the worker may already have started it
    done = await _finished(setup, "acme", created.id)
    assert done.status is ExportStatus.SUCCEEDED, done.error
    data = await _download(setup, "acme", created.id)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [r["target_id"] for r in rows] == ["acme-0", "acme-2"]
    assert rows[0]["details"] == '{"note": "=HYPERLINK(1)"}'  # JSON text starts with '{'
    assert done.row_count == 2 and done.size_bytes == len(data)
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert done.storage_key == f"exports/acme/{created.id}.csv"
    assert done.expires_at is not None
    assert timedelta(days=6.9) < done.expires_at - done.created_at < timedelta(days=7.1)
    path = (await setup.exports.open_download("acme", created.id)).path
    assert path is not None and path.read_bytes() == data


async def test_other_tenants_see_nothing(setup: Setup) -> None:
    created = await setup.exports.create_export("acme", "job_history", "csv")
    await _finished(setup, "acme", created.id)
    for call in (
        setup.exports.get_export("other", created.id),
        setup.exports.open_download("other", created.id),
    ):
        with pytest.raises(NotFound):
            await call
    assert await setup.exports.list_exports("other") == []
    assert [e.id for e in await setup.exports.list_exports("acme")] == [created.id]


async def test_bad_requests_are_refused_before_anything_is_stored(setup: Setup) -> None:
    for args in (
        ("acme", "nope", "csv", None),
        ("acme", "audit_log", "xlsx", None),
        ("acme", "audit_log", "csv", {"colour": "red"}),
        ("../acme", "audit_log", "csv", None),
    ):
        with pytest.raises(InvalidJob):
            await setup.exports.create_export(*args)
    assert await setup.exports.list_exports("acme") == []


async def test_a_pdf_export_lists_every_row_across_pages(setup: Setup) -> None:
    async with setup.sys.sessions() as session, session.begin():
        await session.execute(
            insert(ErrorLogRow),
            [
                {
                    "queue": "email-sending",
                    "kind": "email-sending",
                    "job_id": f"job-{i}",
                    "tenant_id": "acme",
                    "error_type": "SMTPError",
                    "error_message": "Zürich Ελληνικά" if i == 0 else f"failure {i}",
                    "attempts": 3,
                    "created_at": utc_now() - timedelta(minutes=1),
                    "resolved": False,
                }
                for i in range(120)
            ],
        )
    created = await setup.exports.create_export(
        "acme", "job_history", "pdf", {"kind": "email-sending"}, Tier.ENTERPRISE
    )
    done = await _finished(setup, "acme", created.id)
    assert done.status is ExportStatus.SUCCEEDED, done.error
    reader = PdfReader(io.BytesIO(await _download(setup, "acme", created.id)))
    pages = [p.extract_text() for p in reader.pages]
    assert len(pages) >= 3 and f"Page {len(pages)} of {len(pages)}" in pages[-1]
    assert "Tenant: acme" in pages[0] and "email-sending" in pages[0]
    everything = "\n".join(pages)
    assert "Zürich Ελληνικά" in everything
    assert all(f"job-{i}" in everything for i in range(120))


async def test_too_many_rows_for_a_pdf_fail_the_export_for_good(
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"export_pdf_max_rows": 2})
    async with system(limited, default_registry().select(["export-generation"])) as sys_:
        setup = Setup(
            sys_,
            Exports(sys_.sessions, sys_.queue, LocalStore(limited.files_dir)),
            LocalStore(limited.files_dir),
        )
        await _seed(setup, "acme", ["a", "b", "c"])
        created = await setup.exports.create_export("acme", "audit_log", "pdf")
        done = await _finished(setup, "acme", created.id)
        assert done.status is ExportStatus.FAILED
        assert done.error is not None and "too many for a PDF" in done.error
        assert not setup.objects.exists(f"exports/acme/{created.id}.pdf")
        with pytest.raises(InvalidState):
            await setup.exports.open_download("acme", created.id)
        dead = await eventually(lambda: sys_.dead_letters(), lambda d: len(d) == 1)
        assert dead[0].kind == "export-generation"


class _DiskFullAfter50Bytes:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        if len(data) > 100:
            self._out.write(data[:50])
            raise OSError("disk full")
        return self._out.write(data)


class FailingStore(LocalStore):
    """Fails the first write half-way through; later writes go through."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failures_left = 1

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        with super().open_write(key) as out:
            if self.failures_left:
                self.failures_left -= 1
                yield cast(IO[bytes], _DiskFullAfter50Bytes(out))
            else:
                yield out


async def test_a_retried_generation_replaces_the_file_atomically(setup: Setup) -> None:
    await _seed(setup, "acme", ["x"] * 300)
    objects = FailingStore(setup.objects.root)
    async with setup.sys.sessions() as session, session.begin():
        export = await export_store.insert_export(
            session,
            tenant_id="acme",
            tier="free",
            dataset="audit_log",
            fmt=ExportFormat.CSV,
            filters={},
            now=utc_now(),
        )
    key = f"exports/acme/{export.id}.csv"
    limits = Limits(batch_rows=100)
    with pytest.raises(OSError, match="disk full"):
        await generate(setup.sys.sessions, objects, export, now=utc_now(), limits=limits)
    assert not objects.exists(key)
    assert list(objects.root.rglob("*.csv")) == [] and list(objects.root.rglob(".tmp-*")) == []
    first = await generate(setup.sys.sessions, objects, export, now=utc_now(), limits=limits)
    second = await generate(setup.sys.sessions, objects, export, now=utc_now(), limits=limits)
    assert first.row_count == second.row_count == 300
    assert first.sha256 == second.sha256
    data = b"".join(iter_chunks(objects.open_read(key)))
    assert hashlib.sha256(data).hexdigest() == second.sha256


async def _refuse(payload: dict[str, Any], ctx: JobContext) -> None:
    raise PermanentFailure("no such account")


async def test_dead_jobs_are_written_to_the_error_log(settings: Settings) -> None:
    kind = JobKind("refuse", _refuse, retry=RetryPolicy(attempts=2, base_delay_s=0))
    async with system(settings, Registry([kind])) as sys_:
        await sys_.queue.submit(Submission("refuse", {}, "acme", Tier.FREE))

        async def errors_of_acme() -> list[error_log.ErrorEntry]:
            async with sys_.sessions() as session:
                return await error_log.list_errors(session, tenant_id="acme")

        [entry] = await eventually(errors_of_acme, lambda e: len(e) == 1)
        assert entry.kind == "refuse" and entry.error_type == "PermanentFailure"
        assert "no such account" in entry.error_message and not entry.resolved


async def test_an_unwritable_error_log_does_not_break_the_worker(settings: Settings) -> None:
    kind = JobKind("refuse", _refuse, retry=RetryPolicy(attempts=1))
    async with system(settings, Registry([kind])) as sys_:
        # Moved aside, not dropped: on PostgreSQL the module's later tests share the database.
        async with sys_.sessions() as session, session.begin():
            await session.execute(text("ALTER TABLE error_logs RENAME TO error_logs_aside"))
        try:
            await sys_.queue.submit(Submission("refuse", {}, "acme", Tier.FREE))
            await sys_.queue.submit(Submission("refuse", {}, "acme", Tier.FREE))
            dead = await eventually(lambda: sys_.dead_letters(), lambda d: len(d) == 2)
            assert {d.tenant_id for d in dead} == {"acme"}
        finally:
            async with sys_.sessions() as session, session.begin():
                await session.execute(text("ALTER TABLE error_logs_aside RENAME TO error_logs"))


async def test_jobs_for_a_finished_or_foreign_export_change_nothing(setup: Setup) -> None:
    created = await setup.exports.create_export("acme", "audit_log", "csv")
    done = await _finished(setup, "acme", created.id)
    again = await setup.sys.queue.submit(
        Submission("export-generation", {"exportId": created.id}, "acme", Tier.FREE)
    )
    foreign = await setup.sys.queue.submit(
        Submission("export-generation", {"exportId": created.id}, "other", Tier.FREE)
    )
    rerun = await eventually(
        lambda: setup.sys.queue.get(again.job.id), lambda j: j.finished_at_ms is not None
    )
    assert rerun.result["skipped"] is True
    dead = await eventually(lambda: setup.sys.dead_letters(), lambda d: len(d) == 1)
    assert dead[0].job_id == foreign.job.id and "does not exist" in dead[0].error_message
    assert await setup.exports.get_export("acme", created.id) == done
