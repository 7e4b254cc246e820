"""The shared-state port: the few atomic operations on short-lived shared data that
workers, the API and the dashboard need outside the queue itself.

Keys are plain strings built by the callers (they carry the queue prefix and, where the
data belongs to a tenant, the tenant id). Values are text. A TTL makes an entry vanish
for every reader once it passes; nothing is ever returned past its expiry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CountBatch:
    """One write of accounting data, applied as a unit.

    - `counters`: hash key -> [(field, amount), ...] added to the field (created at 0);
      every hash touched gets `ttl_s` again.
    - `lists`: list key -> values, oldest first; each is pushed to the head (so the list
      reads newest first), then cut to `keep` entries and given `ttl_s` again.
    - `scores`: (score, member) pairs on the score board `board`; a member's score only
      ever rises (new members are added).
    """

    ttl_s: int
    keep: int
    counters: Mapping[str, Sequence[tuple[str, int]]] = field(default_factory=dict)
    lists: Mapping[str, Sequence[str]] = field(default_factory=dict)
    board: str = ""
    scores: Sequence[tuple[int, str]] = ()


class SharedState(Protocol):
    """Shared, expiring key-value state (Redis or the Settler database)."""

    async def put(self, key: str, value: str, ttl_ms: int, *, only_new: bool = False) -> bool:
        """Store `value` for `ttl_ms`; with `only_new`, only if no live entry exists.

        True if the value was stored.
        """
        ...

    async def get(self, key: str) -> str | None:
        """The live value of `key`, or None."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """`get` of each key, in order."""
        ...

    async def values_under(self, prefix: str, limit: int) -> list[str]:
        """Live values whose keys start with `prefix` (at most `limit`, in no set order)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key` (its value, counter or lease)."""
        ...

    async def increment(self, key: str, ttl_s: int) -> int:
        """Add one to the counter `key` (0 if absent or expired), restart its TTL; the new
        count. `get` reads it as decimal text."""
        ...

    async def take_token(self, key: str, rate: float, capacity: float) -> tuple[bool, int]:
        """Take one token from a bucket refilled at `rate` per second up to `capacity`
        (a new bucket starts full), by the store's own clock.

        (True, 0) if taken, else (False, milliseconds until a token is there).
        """
        ...

    async def lead(self, key: str, holder: str, ttl_ms: int) -> bool:
        """Take the lease `key` for `holder`, or renew it if `holder` has it; True if
        `holder` holds it for the next `ttl_ms`."""
        ...

    async def read_hashes(self, keys: Sequence[str]) -> list[dict[str, str]]:
        """The fields of each hash (empty when absent or expired), in order."""
        ...

    async def hash_put(self, key: str, name: str, value: str) -> None:
        """Set one field of a hash (no expiry)."""
        ...

    async def hash_delete(self, key: str, name: str) -> None:
        """Remove one field of a hash."""
        ...

    async def push_capped(self, lists: Mapping[str, Sequence[str]], keep: int) -> None:
        """Push values (oldest first) to the head of each list, keeping the newest `keep`."""
        ...

    async def read_lists(self, keys: Sequence[str], count: int) -> list[list[str]]:
        """The newest `count` values of each list (all with `count` < 0), newest first."""
        ...

    async def add_counts(self, batch: CountBatch) -> None:
        """Apply one `CountBatch`."""
        ...

    async def members_since(
        self, board: str, since: int, limit: int, *, forget_upto: int
    ) -> list[str]:
        """Members of a score board with score >= `since`, lowest first, at most `limit`;
        members scored `forget_upto` or lower are removed first."""
        ...

    async def ping(self) -> None:
        """Raise unless the store answers."""
        ...

    async def purge_expired(self) -> int:
        """Drop expired entries where the store does not do it itself; how many."""
        ...
