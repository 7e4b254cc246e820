"""Per-tenant rate limits: a token bucket per tenant in the shared state, refilled at the
tier's rate.

One atomic call per request (a Lua script on Redis, one upsert on PostgreSQL) keeps the
check exact across API processes; the clock is the store's own, so API hosts need not
agree on the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.shared_state import SharedState


@dataclass(frozen=True)
class Verdict:
    """Whether a request may proceed, and if not, after how many seconds to retry."""

    allowed: bool
    retry_after_s: int


class RateLimiter:
    """Token buckets by tenant; the tier sets the refill rate (0 = unlimited)."""

    def __init__(self, state: SharedState, settings: Settings) -> None:
        self._state = state
        self._prefix = settings.queue_prefix
        self._rates = settings.api_rate_limits
        self._burst_s = settings.api_rate_burst_s

    def rate(self, tier: Tier) -> float:
        """Requests per second allowed for `tier` (0 = unlimited)."""
        return self._rates.get(tier.value, 0.0)

    async def check(self, tenant_id: str, tier: Tier) -> Verdict:
        """Take one token from the tenant's bucket; QueueUnavailable if the store is down."""
        rate = self.rate(tier)
        if rate <= 0:
            return Verdict(True, 0)
        capacity = max(1.0, rate * self._burst_s)
        key = f"{self._prefix}:settler:ratelimit:{tenant_id}"
        allowed, wait_ms = await self._state.take_token(key, rate, capacity)
        return Verdict(allowed, max(1, math.ceil(wait_ms / 1000)))
