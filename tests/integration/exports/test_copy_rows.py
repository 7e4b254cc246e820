"""`copy_rows` (PostgreSQL COPY) yields exactly what the keyset pages of `stream_rows` do."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.exports import datasets
from settler_jobs.exports.copy_rows import copy_rows, copy_supported
from settler_jobs.exports.rows import stream_rows
from settler_jobs.storage.audit_tables import AuditLogRow

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 3, 1, tzinfo=UTC)
AWKWARD = [
    "plain",
    "tab\tinside",
    "line\nbreak and\r\nCRLF",
    "back\\slash \\N \\t",
    "\\N",
    "",
    "=1+1",
    " -2",
    "\t@lead",
    'quote " and, comma',
    "Zürich ½ ✓ \U0001f600",
    "\x01\x08\x0b\x0c control",
]


async def _rows(source: Any, sessions: Sessions, raw: dict[str, Any], batch: int) -> list[Any]:
    ds = datasets.get_dataset("audit_log")
    out: list[Any] = []
    async for rows in source(
        sessions,
        ds,
        tenant_id="acme",
        filters=ds.parse_filters(raw),
        until=T0 + timedelta(days=1),
        batch_rows=batch,
    ):
        assert 0 < len(rows) <= batch
        out.extend(list(row) for row in rows)
    return out


async def test_copy_rows_match_the_keyset_pages(db_session_factory: Sessions) -> None:
    audit_log = datasets.get_dataset("audit_log")
    if db_session_factory.kw["bind"].dialect.name != "postgresql":
        assert not copy_supported(db_session_factory, audit_log)
        return
    assert copy_supported(db_session_factory, audit_log)
    floats = datasets.get_dataset("reconciliation_matches")  # floats print differently
    assert not copy_supported(db_session_factory, floats)
    rows = [
        {
            "actor": text,
            "tenant_id": tenant,
            "action": "odd" if i % 2 else "even",
            "target_type": None if i % 3 == 0 else "thing",
            "target_id": text[::-1],
            "details": None if i == 4 else {"text": text, "i": i},
            "created_at": T0 + timedelta(seconds=i % 5, microseconds=i),
        }
        for tenant in ("acme", "other")
        for i, text in enumerate(AWKWARD * 3)
    ]
    async with db_session_factory() as session, session.begin():
        await session.execute(insert(AuditLogRow), rows)

    for raw, batch in (({}, 5), ({}, 1000), ({"action": "odd"}, 4)):
        paged = await _rows(stream_rows, db_session_factory, raw, batch)
        copied = await _rows(copy_rows, db_session_factory, raw, batch)
        assert copied == paged
        assert len(copied) == (len(AWKWARD) * 3 if not raw else len(AWKWARD) * 3 // 2)
        if not raw:  # every awkward value came through (in the actor column)
            assert {row[2] for row in copied} == set(AWKWARD)


async def test_a_reader_that_stops_early_releases_the_copy(db_session_factory: Sessions) -> None:
    if db_session_factory.kw["bind"].dialect.name != "postgresql":
        return
    rows = [
        {"actor": "a", "tenant_id": "acme", "action": "x", "details": {"i": i}, "created_at": T0}
        for i in range(50)
    ]
    async with db_session_factory() as session, session.begin():
        await session.execute(insert(AuditLogRow), rows)
    ds = datasets.get_dataset("audit_log")
    reading = copy_rows(
        db_session_factory,
        ds,
        tenant_id="acme",
        filters=ds.parse_filters({}),
        until=T0 + timedelta(days=1),
        batch_rows=2,
    )

    first = await asyncio.wait_for(anext(reading), 10)
    await asyncio.wait_for(reading.aclose(), 10)  # the COPY is cancelled, not waited for

    assert len(first) == 2
    assert len(await _rows(copy_rows, db_session_factory, {}, 1000)) == 50  # pool still fine
