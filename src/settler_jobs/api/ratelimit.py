"""Per-tenant rate limits: a token bucket per tenant in Redis, refilled at the tier's rate.

One script call per request keeps the check atomic across API processes; the clock is
Redis's own, so API hosts need not agree on the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.errors import QueueUnavailable
from settler_jobs.redis_server import redis_errors

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


@dataclass(frozen=True)
class Verdict:
    """Whether a request may proceed, and if not, after how many seconds to retry."""

    allowed: bool
    retry_after_s: int


class RateLimiter:
    """Token buckets by tenant; the tier sets the refill rate (0 = unlimited)."""

    def __init__(self, client: Redis | None, settings: Settings) -> None:
        # None on the PostgreSQL backend until its state store holds the buckets: then
        # only unlimited tiers pass and limited ones answer 503 (never unlimited).
        self._client = client
        self._prefix = settings.queue_prefix
        self._rates = settings.api_rate_limits
        self._burst_s = settings.api_rate_burst_s
        self._script = client.register_script(_BUCKET) if client is not None else None

    def rate(self, tier: Tier) -> float:
        """Requests per second allowed for `tier` (0 = unlimited)."""
        return self._rates.get(tier.value, 0.0)

    async def check(self, tenant_id: str, tier: Tier) -> Verdict:
        """Take one token from the tenant's bucket; QueueUnavailable if Redis is down."""
        rate = self.rate(tier)
        if rate <= 0:
            return Verdict(True, 0)
        capacity = max(1.0, rate * self._burst_s)
        key = f"{self._prefix}:settler:ratelimit:{tenant_id}"
        if self._script is None:
            raise QueueUnavailable("rate-limit buckets have no store on this queue backend")
        async with redis_errors():
            allowed, wait_ms = await self._script(keys=[key], args=[rate, capacity])
        return Verdict(bool(allowed), max(1, math.ceil(int(wait_ms) / 1000)))
