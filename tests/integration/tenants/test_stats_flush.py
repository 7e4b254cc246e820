"""The per-tenant stats flush, against a real Redis: what a pipeline of the same commands
would leave (counters, TTLs, newest-first capped recent lists, tenants by last activity)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from redis.asyncio import Redis

from settler_jobs.shared_state import RedisState
from settler_jobs.tenants.stats import (
    STATS_TTL_S,
    TenantStats,
    recent_key,
    stats_key,
    tenants_key,
)

AT = datetime(2026, 6, 10, 14, 37, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)


async def test_flush_writes_counters_recent_jobs_and_activity(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        stats = TenantStats(prefix, recent_cap=3)
        for n in range(1500):  # long argument lists go through the script in chunks
            stats.add(f"t{n % 600}", "email", "completed", f"j{n}", 1, 7, AT_MS + n)
        stats.add("t1", "email", "failed", "jx", 3, 9, AT_MS + 5000, "boom")
        await stats.flush(RedisState(client))
        assert not stats.pending
        hour = stats_key(prefix, "t1", "2026061014")
        assert await client.hgetall(hour) == {
            "completed:email": "3",
            "completed@7": "3",
            "failed:email": "1",
            "failed@7": "1",
        }
        recent = [json.loads(item) for item in await client.lrange(recent_key(prefix, "t1"), 0, -1)]
        assert [r["id"] for r in recent] == ["jx", "j1201", "j601"]  # newest first, capped
        assert recent[0]["error"] == "boom" and recent[0]["attempt"] == 3
        for key in (hour, recent_key(prefix, "t1")):
            assert STATS_TTL_S - 5 <= await client.ttl(key) <= STATS_TTL_S
        assert await client.zcard(tenants_key(prefix)) == 600
        assert await client.zscore(tenants_key(prefix), "t1") == AT_MS + 5000

        # A second flush adds to the counters; an older activity time never lowers the score.
        stats.add("t1", "email", "completed", "jy", 1, 7, AT_MS - 1000)
        await stats.flush(RedisState(client))
        assert await client.hget(hour, "completed:email") == "4"
        assert await client.zscore(tenants_key(prefix), "t1") == AT_MS + 5000
        assert await client.llen(recent_key(prefix, "t1")) == 3
        newest = await client.lindex(recent_key(prefix, "t1"), 0)
        assert newest is not None and json.loads(newest)["id"] == "jy"
    finally:
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_failed_flush_drops_its_buffer_and_does_not_raise(redis_url: str) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        stats = TenantStats("unused", recent_cap=3)
        stats.add("t1", "email", "completed", "j1", 1, 7, AT_MS)
        await stats.flush(RedisState(client))
        assert not stats.pending
    finally:
        await client.aclose()
