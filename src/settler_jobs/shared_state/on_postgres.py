"""Shared state in the Settler database on PostgreSQL (tables in `storage.shared_state_tables`).

Every operation is one statement (on an autocommit connection: one round trip), or one
transaction where a batch needs several, so concurrent API processes and workers see it
atomically. Time is the database's
(`statement_timestamp()`), as Redis's own clock is on Redis. Expired rows are invisible
to reads; `purge_expired` deletes them (the workers call it once a minute).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from settler_jobs.errors import QueueUnavailable
from settler_jobs.shared_state.port import CountBatch

NOW: Final = "statement_timestamp()"
_LIVE_V: Final = f"(v.expires_at IS NULL OR v.expires_at > {NOW})"
_LIVE_C: Final = f"(c.expires_at IS NULL OR c.expires_at > {NOW})"
_EXPIRY: Final = f"{NOW} + CAST(:ttl_ms AS bigint) * interval '1 millisecond'"

_PUT: Final = f"""
INSERT INTO shared_values AS v (key, value, expires_at) VALUES (:key, :value, {_EXPIRY})
ON CONFLICT (key) DO UPDATE
SET value = excluded.value, tokens = NULL, touched_at = NULL, expires_at = excluded.expires_at
"""
_GET_MANY: Final = f"""
SELECT v.key, v.value FROM shared_values v
WHERE v.key = ANY(CAST(:keys AS text[])) AND {_LIVE_V}
"""
_UNDER: Final = f"""
SELECT v.value FROM shared_values v
WHERE starts_with(v.key, :prefix) AND v.value IS NOT NULL AND {_LIVE_V} LIMIT :limit
"""
_INCREMENT: Final = f"""
INSERT INTO shared_values AS v (key, value, expires_at) VALUES (:key, '1', {_EXPIRY})
ON CONFLICT (key) DO UPDATE
SET value = CAST(CASE WHEN {_LIVE_V} THEN CAST(v.value AS bigint) ELSE 0 END + 1 AS text),
    tokens = NULL, touched_at = NULL, expires_at = excluded.expires_at
RETURNING CAST(v.value AS bigint)
"""
# The tokens there now: the stored ones plus the refill since they were counted.
_REFILLED: Final = f"""LEAST(CAST(:capacity AS float8), CASE WHEN {_LIVE_V} AND v.tokens IS NOT NULL
  THEN v.tokens + GREATEST(0, EXTRACT(EPOCH FROM {NOW} - v.touched_at)) * CAST(:rate AS float8)
  ELSE CAST(:capacity AS float8) END)"""
_TAKE: Final = f"""
INSERT INTO shared_values AS v (key, value, tokens, touched_at, expires_at)
VALUES (:key, '1', CAST(:capacity AS float8) - 1, {NOW}, {_EXPIRY})
ON CONFLICT (key) DO UPDATE
SET value = CASE WHEN {_REFILLED} >= 1 THEN '1' ELSE '0' END,
    tokens = CASE WHEN {_REFILLED} >= 1 THEN {_REFILLED} - 1 ELSE {_REFILLED} END,
    touched_at = {NOW}, expires_at = excluded.expires_at
RETURNING v.value, v.tokens
"""
_LEAD: Final = f"""
INSERT INTO shared_values AS v (key, value, expires_at) VALUES (:key, :holder, {_EXPIRY})
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE v.value = excluded.value OR NOT {_LIVE_V}
RETURNING 1
"""
_READ_HASHES: Final = f"""
SELECT f.key, f.name, f.value FROM shared_hash_fields f
LEFT JOIN shared_collections c ON c.key = f.key
WHERE f.key = ANY(CAST(:keys AS text[])) AND {_LIVE_C}
"""
_HASH_PUT: Final = """
INSERT INTO shared_hash_fields (key, name, value) VALUES (:key, :name, :value)
ON CONFLICT (key, name) DO UPDATE SET value = excluded.value
"""
_READ_LISTS: Final = f"""
SELECT key, value FROM (
  SELECT i.key, i.value, row_number() OVER (PARTITION BY i.key ORDER BY i.id DESC) AS n
  FROM shared_list_items i LEFT JOIN shared_collections c ON c.key = i.key
  WHERE i.key = ANY(CAST(:keys AS text[])) AND {_LIVE_C}
) AS newest WHERE CAST(:count AS integer) < 0 OR n <= CAST(:count AS integer)
ORDER BY key, n
"""
# Writes into an expired hash or list start from nothing, as on a key Redis expired.
_DROP_EXPIRED_OF: Final = f"""
WITH gone AS (
  DELETE FROM shared_collections
  WHERE key = ANY(CAST(:keys AS text[])) AND expires_at <= {NOW} RETURNING key
), fields AS (
  DELETE FROM shared_hash_fields WHERE key IN (SELECT key FROM gone)
)
DELETE FROM shared_list_items WHERE key IN (SELECT key FROM gone)
"""
_SET_EXPIRY: Final = f"""
INSERT INTO shared_collections (key, expires_at)
SELECT key, {NOW} + CAST(:ttl_s AS bigint) * interval '1 second'
FROM unnest(CAST(:keys AS text[])) AS k(key)
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
"""
_ADD_COUNTS: Final = """
INSERT INTO shared_hash_fields AS f (key, name, value)
SELECT key, name, CAST(amount AS text)
FROM unnest(CAST(:keys AS text[]), CAST(:names AS text[]), CAST(:amounts AS bigint[]))
  AS t(key, name, amount)
ON CONFLICT (key, name) DO UPDATE
SET value = CAST(CAST(f.value AS bigint) + CAST(excluded.value AS bigint) AS text)
"""
_PUSH: Final = """
INSERT INTO shared_list_items (key, value)
SELECT key, value FROM unnest(CAST(:keys AS text[]), CAST(:values AS text[]))
  WITH ORDINALITY AS t(key, value, position)
ORDER BY position
"""
_TRIM: Final = """
DELETE FROM shared_list_items WHERE id IN (
  SELECT id FROM (
    SELECT id, row_number() OVER (PARTITION BY key ORDER BY id DESC) AS n
    FROM shared_list_items WHERE key = ANY(CAST(:keys AS text[]))
  ) AS ranked WHERE n > :keep
)
"""
_RAISE_SCORES: Final = """
INSERT INTO shared_scores AS s (board, member, score)
SELECT :board, member, max(score)
FROM unnest(CAST(:members AS text[]), CAST(:scores AS bigint[])) AS t(member, score)
GROUP BY member
ON CONFLICT (board, member) DO UPDATE SET score = GREATEST(s.score, excluded.score)
"""
_FORGET_SCORES: Final = "DELETE FROM shared_scores WHERE board = :board AND score <= :upto"
_MEMBERS_SINCE: Final = """
SELECT member FROM shared_scores
WHERE board = :board AND score >= :since ORDER BY score, member LIMIT :limit
"""
_PURGE: Final = f"""
WITH gone_values AS (DELETE FROM shared_values WHERE expires_at <= {NOW} RETURNING 1),
gone AS (DELETE FROM shared_collections WHERE expires_at <= {NOW} RETURNING key),
fields AS (DELETE FROM shared_hash_fields WHERE key IN (SELECT key FROM gone)),
items AS (DELETE FROM shared_list_items WHERE key IN (SELECT key FROM gone))
SELECT (SELECT count(*) FROM gone_values) + (SELECT count(*) FROM gone)
"""


class PostgresState:
    """`SharedState` on the Settler database (PostgreSQL through asyncpg)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        async with _unavailable_when_unreachable(), self._engine.begin() as connection:
            yield connection

    async def _rows(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        async with _unavailable_when_unreachable(), self._autocommit.connect() as connection:
            return list((await connection.execute(_text(sql), params)).all())

    async def put(self, key: str, value: str, ttl_ms: int, *, only_new: bool = False) -> bool:
        sql = _PUT + (f"WHERE NOT {_LIVE_V} " if only_new else "") + "RETURNING 1"
        return bool(await self._rows(sql, {"key": key, "value": value, "ttl_ms": ttl_ms}))

    async def get(self, key: str) -> str | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        found = dict(await self._rows(_GET_MANY, {"keys": list(keys)}))
        return [found.get(key) for key in keys]

    async def values_under(self, prefix: str, limit: int) -> list[str]:
        return [row[0] for row in await self._rows(_UNDER, {"prefix": prefix, "limit": limit})]

    async def delete(self, key: str) -> None:
        await self._rows("DELETE FROM shared_values WHERE key = :key RETURNING 1", {"key": key})

    async def increment(self, key: str, ttl_s: int) -> int:
        [(count,)] = await self._rows(_INCREMENT, {"key": key, "ttl_ms": ttl_s * 1000})
        return int(count)

    async def take_token(self, key: str, rate: float, capacity: float) -> tuple[bool, int]:
        ttl_ms = math.ceil(capacity * 1000 / rate) + 1000
        params = {"key": key, "rate": rate, "capacity": capacity, "ttl_ms": ttl_ms}
        [(allowed, tokens)] = await self._rows(_TAKE, params)
        if allowed == "1":
            return True, 0
        return False, math.ceil((1 - float(tokens)) * 1000 / rate)

    async def lead(self, key: str, holder: str, ttl_ms: int) -> bool:
        return bool(await self._rows(_LEAD, {"key": key, "holder": holder, "ttl_ms": ttl_ms}))

    async def read_hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        out: dict[str, dict[str, str]] = {key: {} for key in keys}
        for key, name, value in await self._rows(_READ_HASHES, {"keys": list(keys)}):
            out[key][name] = value
        return [out[key] for key in keys]

    async def hash_put(self, key: str, name: str, value: str) -> None:
        await self._rows(_HASH_PUT + " RETURNING 1", {"key": key, "name": name, "value": value})

    async def hash_delete(self, key: str, name: str) -> None:
        sql = "DELETE FROM shared_hash_fields WHERE key = :key AND name = :name RETURNING 1"
        await self._rows(sql, {"key": key, "name": name})

    async def push_capped(self, lists: Mapping[str, Sequence[str]], keep: int) -> None:
        keys = [key for key, values in lists.items() for _ in values]
        if not keys:
            return
        values = [value for items in lists.values() for value in items]
        async with self._tx() as connection:
            await _push(connection, keys, values, list(lists), keep)

    async def read_lists(self, keys: Sequence[str], count: int) -> list[list[str]]:
        out: dict[str, list[str]] = {key: [] for key in keys}
        for key, value in await self._rows(_READ_LISTS, {"keys": list(keys), "count": count}):
            out[key].append(value)
        return [out[key] for key in keys]

    async def add_counts(self, batch: CountBatch) -> None:
        totals: dict[tuple[str, str], int] = {}
        for key, pairs in batch.counters.items():
            for name, amount in pairs:
                totals[(key, name)] = totals.get((key, name), 0) + int(amount)
        touched = [*batch.counters, *batch.lists]
        async with self._tx() as connection:
            run = connection.execute
            if touched:
                await run(_text(_DROP_EXPIRED_OF), {"keys": touched})
            if totals:
                await run(
                    _text(_ADD_COUNTS),
                    {
                        "keys": [key for key, _ in totals],
                        "names": [name for _, name in totals],
                        "amounts": list(totals.values()),
                    },
                )
            keys = [key for key, values in batch.lists.items() for _ in values]
            if keys:
                values = [value for items in batch.lists.values() for value in items]
                await _push(connection, keys, values, list(batch.lists), batch.keep)
            if touched:
                await run(_text(_SET_EXPIRY), {"keys": touched, "ttl_s": batch.ttl_s})
            if batch.scores:
                await run(
                    _text(_RAISE_SCORES),
                    {
                        "board": batch.board,
                        "members": [member for _, member in batch.scores],
                        "scores": [int(score) for score, _ in batch.scores],
                    },
                )

    async def members_since(
        self, board: str, since: int, limit: int, *, forget_upto: int
    ) -> list[str]:
        async with self._tx() as connection:
            await connection.execute(_text(_FORGET_SCORES), {"board": board, "upto": forget_upto})
            params = {"board": board, "since": since, "limit": limit}
            rows = (await connection.execute(_text(_MEMBERS_SINCE), params)).all()
        return [str(row[0]) for row in rows]

    async def ping(self) -> None:
        await self._rows("SELECT 1", {})

    async def purge_expired(self) -> int:
        [(removed,)] = await self._rows(_PURGE, {})
        return int(removed)


@asynccontextmanager
async def _unavailable_when_unreachable() -> AsyncIterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
        raise QueueUnavailable(
            f"the database is unreachable ({type(exc).__name__}); nothing was changed"
        ) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise QueueUnavailable("the database connection was lost") from exc
        raise


_TEXTS: dict[str, TextClause] = {}


def _text(sql: str) -> TextClause:
    """The statement object of `sql`, made once (the statements here are constants)."""
    found = _TEXTS.get(sql)
    if found is None:
        found = _TEXTS[sql] = text(sql)
    return found


async def _push(
    connection: AsyncConnection, keys: list[str], values: list[str], lists: list[str], keep: int
) -> None:
    await connection.execute(_text(_PUSH), {"keys": keys, "values": values})
    await connection.execute(_text(_TRIM), {"keys": lists, "keep": keep})
