"""The `SharedState` contract, held by Redis and PostgreSQL alike: values with expiry,
counters, token buckets, leases, hashes, capped lists, count batches and score boards."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.shared_state import (
    CountBatch,
    PostgresState,
    RedisState,
    SharedState,
    shared_state,
)
from settler_jobs.storage.db import create_engine, session_factory
from tests.helpers import eventually


async def test_values_are_stored_read_and_deleted(state: SharedState, prefix: str) -> None:
    await state.ping()
    assert await state.put(f"{prefix}:a", "one", 60_000)
    assert await state.put(f"{prefix}:a", "uno", 60_000)  # overwrites
    assert await state.get(f"{prefix}:a") == "uno"
    assert await state.get(f"{prefix}:missing") is None
    assert await state.get_many([f"{prefix}:missing", f"{prefix}:a"]) == [None, "uno"]
    assert await state.get_many([]) == []
    await state.delete(f"{prefix}:a")
    assert await state.get(f"{prefix}:a") is None


async def test_values_under_a_prefix_stay_within_it(state: SharedState, prefix: str) -> None:
    await state.put(f"{prefix}:w:t1:a", "a1", 60_000)
    await state.put(f"{prefix}:w:t1:b", "b1", 60_000)
    await state.put(f"{prefix}:w:t10:a", "other tenant", 60_000)
    await state.put(f"{prefix}:w:t1_x", "no separator", 60_000)
    assert sorted(await state.values_under(f"{prefix}:w:t1:", 100)) == ["a1", "b1"]
    assert len(await state.values_under(f"{prefix}:w:t1:", 1)) == 1
    assert await state.values_under(f"{prefix}:w:none:", 100) == []


async def test_a_value_expires_for_every_read(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:short"
    assert await state.put(key, "soon gone", 150)
    assert await state.put(f"{prefix}:long", "stays", 60_000)
    assert await state.get(key) == "soon gone"
    await eventually(lambda: state.get(key), lambda v: v is None, timeout_s=5)
    assert await state.get_many([key, f"{prefix}:long"]) == [None, "stays"]
    assert await state.values_under(f"{prefix}:", 100) == ["stays"]
    purged = await state.purge_expired()
    assert purged >= (1 if isinstance(state, PostgresState) else 0)
    assert await state.get(f"{prefix}:long") == "stays"


async def test_only_new_stores_once_until_the_value_expires(
    state: SharedState, prefix: str
) -> None:
    key = f"{prefix}:claim"
    assert await state.put(key, "first", 200, only_new=True)
    assert not await state.put(key, "second", 200, only_new=True)
    assert await state.get(key) == "first"
    await eventually(
        lambda: state.put(key, "third", 60_000, only_new=True), lambda ok: ok, timeout_s=5
    )
    assert await state.get(key) == "third"


async def test_claims_are_exclusive_under_concurrency(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:claim-race"
    wins = await asyncio.gather(*(state.put(key, str(n), 60_000, only_new=True) for n in range(12)))
    assert wins.count(True) == 1
    assert await state.get(key) == str(wins.index(True))


async def test_a_counter_counts_and_restarts_after_its_ttl(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:fails:10.0.0.1"
    assert [await state.increment(key, 60) for _ in range(3)] == [1, 2, 3]
    assert await state.get(key) == "3"
    assert await state.increment(f"{prefix}:fails:10.0.0.2", 60) == 1  # its own count
    short = f"{prefix}:fails:short"
    assert await state.increment(short, 1) == 1
    assert await state.increment(short, 1) == 2
    await eventually(lambda: state.get(short), lambda v: v is None, timeout_s=5)
    assert await state.increment(short, 1) == 1


async def test_concurrent_increments_are_all_counted(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:counter-race"
    counts = await asyncio.gather(*(state.increment(key, 60) for _ in range(15)))
    assert sorted(counts) == list(range(1, 16))


async def test_a_token_bucket_starts_full_refuses_when_empty_and_refills(
    state: SharedState, prefix: str
) -> None:
    key = f"{prefix}:ratelimit:t1"
    assert await state.take_token(key, 20.0, 2.0) == (True, 0)
    assert await state.take_token(key, 20.0, 2.0) == (True, 0)
    allowed, wait_ms = await state.take_token(key, 20.0, 2.0)
    assert not allowed and 0 < wait_ms <= 50  # one token takes 50 ms at 20/s
    # Another tenant's bucket is untouched.
    assert await state.take_token(f"{prefix}:ratelimit:t2", 20.0, 2.0) == (True, 0)
    await eventually(lambda: state.take_token(key, 20.0, 2.0), lambda v: v[0], timeout_s=5)


async def test_a_slow_bucket_tells_how_long_to_wait(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:ratelimit:slow"
    assert (await state.take_token(key, 0.5, 1.0))[0]
    allowed, wait_ms = await state.take_token(key, 0.5, 1.0)
    assert not allowed and 1500 < wait_ms <= 2000


async def test_a_bucket_hands_out_exactly_its_capacity_under_concurrency(
    state: SharedState, prefix: str
) -> None:
    key = f"{prefix}:ratelimit:race"
    verdicts = await asyncio.gather(*(state.take_token(key, 0.01, 5.0) for _ in range(20)))
    assert [allowed for allowed, _ in verdicts].count(True) == 5


async def test_a_lease_has_one_holder_who_renews_it(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:lease"
    held = await asyncio.gather(*(state.lead(key, f"w{n}", 60_000) for n in range(10)))
    assert held.count(True) == 1
    holder = f"w{held.index(True)}"
    assert await state.lead(key, holder, 60_000)  # renewed
    others = [f"w{n}" for n in range(10) if f"w{n}" != holder]
    assert not any([await state.lead(key, w, 60_000) for w in others])


async def test_an_expired_lease_passes_to_another_holder(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:lease-short"
    assert await state.lead(key, "a", 200)
    assert not await state.lead(key, "b", 200)
    await eventually(lambda: state.lead(key, "b", 60_000), lambda ok: ok, timeout_s=5)
    assert not await state.lead(key, "a", 60_000)


async def test_hash_fields_are_set_read_and_deleted(state: SharedState, prefix: str) -> None:
    key = f"{prefix}:alerts"
    await state.hash_put(key, "A", '{"n": 1}')
    await state.hash_put(key, "B", '{"n": 2}')
    await state.hash_put(key, "A", '{"n": 3}')
    await state.hash_put(f"{prefix}:other", "A", "elsewhere")
    assert await state.read_hashes([key]) == [{"A": '{"n": 3}', "B": '{"n": 2}'}]
    await state.hash_delete(key, "A")
    assert await state.read_hashes([f"{prefix}:none", key]) == [{}, {"B": '{"n": 2}'}]


async def test_capped_lists_read_newest_first(state: SharedState, prefix: str) -> None:
    a, b = f"{prefix}:depth:a", f"{prefix}:depth:b"
    await state.push_capped({a: ["1", "2"], b: ["x"]}, 3)
    await state.push_capped({a: ["3", "4", "5"]}, 3)
    assert await state.read_lists([a, b, f"{prefix}:depth:none"], -1) == [
        ["5", "4", "3"],
        ["x"],
        [],
    ]
    assert await state.read_lists([a], 2) == [["5", "4"]]


async def test_a_count_batch_adds_caps_and_only_raises_scores(
    state: SharedState, prefix: str
) -> None:
    h1, h2 = f"{prefix}:stats:t1:2026061014", f"{prefix}:stats:t2:2026061014"
    recent, board = f"{prefix}:recent:t1", f"{prefix}:tenants"
    first = CountBatch(
        ttl_s=600,
        keep=2,
        counters={h1: [("completed:email", 2), ("failed@7", 1)], h2: [("completed:email", 5)]},
        lists={recent: ["j1", "j2", "j3"]},
        board=board,
        scores=[(1000, "t1"), (500, "t2")],
    )
    await state.add_counts(first)
    second = CountBatch(
        ttl_s=600,
        keep=2,
        counters={h1: [("completed:email", 1)]},
        lists={recent: ["j4"]},
        board=board,
        scores=[(900, "t1"), (700, "t2"), (800, "t3")],
    )
    await state.add_counts(second)
    assert await state.read_hashes([h1, h2]) == [
        {"completed:email": "3", "failed@7": "1"},
        {"completed:email": "5"},
    ]
    assert await state.read_lists([recent], -1) == [["j4", "j3"]]
    assert await state.members_since(board, 0, 10, forget_upto=-1) == ["t2", "t3", "t1"]
    assert await state.members_since(board, 750, 10, forget_upto=-1) == ["t3", "t1"]
    assert await state.members_since(board, 0, 1, forget_upto=-1) == ["t2"]
    # Members at or below `forget_upto` are dropped for good.
    assert await state.members_since(board, 0, 10, forget_upto=700) == ["t3", "t1"]
    assert await state.members_since(board, 0, 10, forget_upto=-1) == ["t3", "t1"]


async def test_counted_hashes_and_lists_expire_and_restart(state: SharedState, prefix: str) -> None:
    h, recent, board = f"{prefix}:stats:t1:h", f"{prefix}:recent:t1", f"{prefix}:tenants"
    batch = CountBatch(
        ttl_s=1,
        keep=5,
        counters={h: [("n", 2)]},
        lists={recent: ["a"]},
        board=board,
        scores=[(1, "t1")],
    )
    await state.add_counts(batch)
    assert await state.read_hashes([h]) == [{"n": "2"}]
    await eventually(lambda: state.read_hashes([h]), lambda v: v == [{}], timeout_s=5)
    assert await state.read_lists([recent], -1) == [[]]
    await state.add_counts(batch)
    assert await state.read_hashes([h]) == [{"n": "2"}]  # counted from zero again
    assert await state.read_lists([recent], -1) == [["a"]]


async def test_the_backend_setting_picks_the_implementation(settings: Settings) -> None:
    on_redis = settings.model_copy(update={"queue_backend": "redis"})
    on_pg = settings.model_copy(update={"queue_backend": "postgres"})
    client = Redis.from_url(settings.redis_url or "", decode_responses=True)
    engine = create_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    try:
        assert isinstance(shared_state(on_redis, client, sessions), RedisState)
        picked = shared_state(on_pg, client, sessions)
        assert isinstance(picked, PostgresState)
        with pytest.raises(ConfigError):
            shared_state(on_redis, None, sessions)
        with pytest.raises(ConfigError):
            shared_state(on_pg, client, None)
    finally:
        await client.aclose()
        await engine.dispose()
