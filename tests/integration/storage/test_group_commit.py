"""`Transactions.grouped`: concurrent callers share one transaction (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.storage.db import Transactions
from tests.helpers import eventually

Sessions = async_sessionmaker[AsyncSession]
BATCHES: list[list[str]] = []


def _write_names(conn: Connection, names: Sequence[str]) -> list[str | Exception]:
    """Writes each name to a scratch table; "bad..." fails alone, "boom" fails them all."""
    BATCHES.append(list(names))
    results: list[str | Exception] = []
    for name in names:
        if name.startswith("bad"):
            results.append(ValueError(f"refused {name}"))  # nothing written for it
            continue
        if name == "boom":
            raise RuntimeError("the whole transaction fails")
        conn.execute(text("INSERT INTO scratch_group (name) VALUES (:n)"), {"n": name})
        results.append(name.upper())
    return results


@pytest.fixture
async def transactions(db_session_factory: Sessions) -> AsyncIterator[Transactions]:
    BATCHES.clear()
    async with db_session_factory() as session, session.begin():
        await session.execute(text("DROP TABLE IF EXISTS scratch_group"))
        await session.execute(text("CREATE TABLE scratch_group (name TEXT NOT NULL)"))
    tx = Transactions(db_session_factory.kw["bind"])
    try:
        yield tx
    finally:
        await tx.aclose()


async def _batches() -> list[list[str]]:
    return list(BATCHES)


async def _stored(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(text("SELECT name FROM scratch_group ORDER BY name"))
        return [row[0] for row in rows]


async def test_concurrent_items_share_one_transaction_and_keep_their_own_results(
    transactions: Transactions, db_session_factory: Sessions
) -> None:
    group = transactions.grouped(_write_names)
    assert transactions.grouped(_write_names) is group

    results = await asyncio.gather(
        *(group.submit(name) for name in ("a", "bad-b", "c")), return_exceptions=True
    )

    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError) and "bad-b" in str(results[1])
    assert BATCHES == [["a", "bad-b", "c"]]
    assert await _stored(db_session_factory) == ["a", "c"]

    # A lone caller does not wait for company; callers arriving meanwhile form the next batch.
    first = asyncio.ensure_future(group.submit("d"))
    await eventually(_batches, lambda batches: len(batches) == 2)  # "d" is being written
    later = await asyncio.gather(group.submit("e"), group.submit("f"))
    assert await first == "D" and list(later) == ["E", "F"]
    assert BATCHES[1:] == [["d"], ["e", "f"]]


async def test_a_failed_transaction_fails_every_caller_and_commits_nothing(
    transactions: Transactions, db_session_factory: Sessions
) -> None:
    group = transactions.grouped(_write_names)
    await group.submit("kept")

    results = await asyncio.gather(group.submit("x"), group.submit("boom"), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in results)
    assert await _stored(db_session_factory) == ["kept"]
    assert await group.submit("y") == "Y"  # the group goes on
