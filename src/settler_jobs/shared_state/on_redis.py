"""Shared state in Redis: strings with PX expiry, hashes, lists and a sorted set.

Redis expires keys itself, so `purge_expired` has nothing to do. The token bucket and
the count batch are Lua scripts: atomic, one round trip each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from redis.asyncio import Redis

from settler_jobs.redis_server import redis_errors
from settler_jobs.shared_state.port import CountBatch

_SCAN_COUNT: Final = 500
_GLOB: Final = re.compile(r"([*?\[\]\\])")

# KEYS[1] bucket; ARGV[1] tokens per second, ARGV[2] capacity. Returns {allowed, wait ms}.
_BUCKET: Final = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, wait}
"""

# KEYS: the score board, the hashes, the lists. ARGV: ttl, keep - 1, #hashes, #lists,
# then per hash n and n (field, amount) pairs, per list n and n values, then n and n
# (score, member) pairs.
_COUNTS: Final = """
local ttl, trim, hashes, lists = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
local function each_chunk(n, step)
  -- unpack() is bounded by the Lua stack: pass long argument lists in chunks.
  local first = a
  a = a + n * step
  local chunks = {}
  for i = first, a - 1, 960 do
    chunks[#chunks + 1] = {i, math.min(i + 959, a - 1)}
  end
  return chunks
end
for h = 1, hashes do
  local key = KEYS[1 + h]
  local n = tonumber(ARGV[a])
  a = a + 1
  for i = a, a + 2 * n - 1, 2 do
    redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
  end
  a = a + 2 * n
  redis.call('EXPIRE', key, ttl)
end
for l = 1, lists do
  local key = KEYS[1 + hashes + l]
  local n = tonumber(ARGV[a])
  a = a + 1
  for _, c in ipairs(each_chunk(n, 1)) do
    redis.call('LPUSH', key, unpack(ARGV, c[1], c[2]))
  end
  redis.call('LTRIM', key, 0, trim)
  redis.call('EXPIRE', key, ttl)
end
local n = tonumber(ARGV[a])
a = a + 1
for _, c in ipairs(each_chunk(n, 2)) do
  redis.call('ZADD', KEYS[1], 'GT', unpack(ARGV, c[1], c[2]))
end
return 0
"""


class RedisState:
    """`SharedState` on a Redis client that decodes responses."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._bucket = client.register_script(_BUCKET)
        self._counts = client.register_script(_COUNTS)

    async def put(self, key: str, value: str, ttl_ms: int, *, only_new: bool = False) -> bool:
        return bool(await self.client.set(key, value, px=ttl_ms, nx=only_new))

    async def get(self, key: str) -> str | None:
        value = await self.client.get(key)
        return None if value is None else str(value)

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        return [None if v is None else str(v) for v in await self.client.mget(keys)]

    async def values_under(self, prefix: str, limit: int) -> list[str]:
        keys: list[str] = []
        pattern = _GLOB.sub(r"\\\1", prefix) + "*"
        async for key in self.client.scan_iter(match=pattern, count=_SCAN_COUNT):
            keys.append(str(key))
            if len(keys) >= limit:
                break
        if not keys:
            return []
        return [v for v in await self.client.mget(keys) if isinstance(v, str)]

    async def delete(self, key: str) -> None:
        await self.client.delete(key)

    async def increment(self, key: str, ttl_s: int) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl_s)
        count, _ = await pipe.execute()
        return int(count)

    async def take_token(self, key: str, rate: float, capacity: float) -> tuple[bool, int]:
        async with redis_errors():
            allowed, wait_ms = await self._bucket(keys=[key], args=[rate, capacity])
        return bool(allowed), int(wait_ms)

    async def lead(self, key: str, holder: str, ttl_ms: int) -> bool:
        if await self.client.set(key, holder, px=ttl_ms, nx=True):
            return True
        if await self.client.get(key) == holder:
            await self.client.pexpire(key, ttl_ms)
            return True
        return False

    async def read_hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        if len(keys) == 1:
            found = await self.client.hgetall(keys[0])
            return [{str(k): str(v) for k, v in found.items()}]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [dict(found) for found in await pipe.execute()]

    async def hash_put(self, key: str, name: str, value: str) -> None:
        await self.client.hset(key, name, value)

    async def hash_delete(self, key: str, name: str) -> None:
        await self.client.hdel(key, name)

    async def push_capped(self, lists: Mapping[str, Sequence[str]], keep: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, values in lists.items():
            if not values:
                continue
            pipe.lpush(key, *values)
            pipe.ltrim(key, 0, keep - 1)
        await pipe.execute()

    async def read_lists(self, keys: Sequence[str], count: int) -> list[list[str]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, 0, count - 1 if count > 0 else -1)
        return [list(found) for found in await pipe.execute()]

    async def add_counts(self, batch: CountBatch) -> None:
        keys: list[str] = [batch.board, *batch.counters, *batch.lists]
        args: list[Any] = [batch.ttl_s, batch.keep - 1, len(batch.counters), len(batch.lists)]
        for pairs in batch.counters.values():
            args.append(len(pairs))
            for name, amount in pairs:
                args += (name, amount)
        for values in batch.lists.values():
            args.append(len(values))
            args += values
        args.append(len(batch.scores))
        for score, member in batch.scores:
            args += (score, member)
        await self._counts(keys, args)

    async def members_since(
        self, board: str, since: int, limit: int, *, forget_upto: int
    ) -> list[str]:
        await self.client.zremrangebyscore(board, "-inf", forget_upto)
        found = await self.client.zrangebyscore(board, since, "+inf", 0, limit)
        return [str(m) for m in found]

    async def ping(self) -> None:
        await self.client.ping()

    async def purge_expired(self) -> int:
        return 0
