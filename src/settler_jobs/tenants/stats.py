"""Per-tenant job accounting, cheap enough for the worker's hot path.

Workers call `TenantStats.record` (in memory, no I/O) when an attempt ends; a
background loop writes the buffer with `flush`, one `CountBatch` of the shared state per
interval (one script call on Redis, one transaction on PostgreSQL). Keys:

- `<prefix>:settler:stats:<tenant>:<YYYYMMDDHH>`: a hash per tenant and UTC hour with
  `<outcome>:<kind>` counters and `<outcome>@<n>` totals per 5-minute slot n (0-11);
  it expires after two days.
- `<prefix>:settler:recent:<tenant>`: the newest job summaries (JSON), capped.
- `<prefix>:settler:tenants`: tenants by last activity (ms), for "active tenants".

Outcomes: `completed`, `failed` (final: dead-lettered), `retried`, `cancelled`. A worker
that dies loses at most one flush interval of counts; the numbers are for dashboards,
not billing.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Final

from settler_jobs.shared_state import CountBatch, SharedState

log = logging.getLogger(__name__)

STATS_TTL_S: Final = 2 * 86_400
OUTCOMES: Final = ("completed", "failed", "retried", "cancelled")
SLOT_MINUTES: Final = 5
_MAX_ERROR: Final = 200


def hour_bucket(moment: datetime) -> str:
    """The UTC hour a moment falls in, as used in stats keys."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H")


_Summary = tuple[str, str, str, int, int, int, str | None]
"""(job id, kind, outcome, attempt, duration ms, finished at ms, error)."""


def _summary_json(item: _Summary) -> str:
    """The summary as `json.dumps` of {id, kind, outcome, attempt, durationMs, finishedAt[,
    error]} writes it, assembled directly (flushes write up to `recent_cap` per tenant)."""
    job_id, kind, outcome, attempt, duration_ms, at_ms, error = item
    text = (
        f'{{"id": {_quote(job_id)}, "kind": {_quote(kind)}, "outcome": {_quote(outcome)}, '
        f'"attempt": {int(attempt)}, "durationMs": {int(duration_ms)}, '
        f'"finishedAt": "{_iso_ms(at_ms)}"'
    )
    if error:
        return f'{text}, "error": {_quote(error[:_MAX_ERROR])}}}'
    return text + "}"


def _iso_ms(at_ms: int) -> str:
    """`datetime.isoformat(timespec="milliseconds")` of an epoch-ms time in UTC."""
    second, ms = divmod(at_ms, 1000)
    if _last_second[0] != second:
        _last_second[:] = [second, datetime.fromtimestamp(second, UTC).isoformat()[:19]]
    return f"{_last_second[1]}.{ms:03d}+00:00"


_last_second: list[Any] = [None, ""]


def stats_key(prefix: str, tenant: str, bucket: str) -> str:
    return f"{prefix}:settler:stats:{tenant}:{bucket}"


def recent_key(prefix: str, tenant: str) -> str:
    return f"{prefix}:settler:recent:{tenant}"


def tenants_key(prefix: str) -> str:
    return f"{prefix}:settler:tenants"


class TenantStats:
    """A buffer of per-tenant outcomes and recent jobs, flushed in one batch."""

    def __init__(self, prefix: str, recent_cap: int) -> None:
        self._prefix = prefix
        self._cap = recent_cap
        self._counts: dict[tuple[str, str, str], int] = {}
        self._recent: dict[str, deque[_Summary]] = {}
        self._seen: dict[str, int] = {}
        self._hour: tuple[int, str] = (-1, "")
        self._names: dict[tuple[str, str, int], tuple[str, str]] = {}

    def record(
        self,
        tenant: str,
        kind: str,
        outcome: str,
        *,
        job_id: str,
        attempt: int,
        duration_ms: int,
        at: datetime,
        error: str | None = None,
    ) -> None:
        """Count one attempt's outcome for the tenant (memory only).

        Runs once per job: the JSON summary is built at flush time, and only for the
        newest `recent_cap` jobs of each tenant.
        """
        at_ms = int(at.timestamp() * 1000)
        self.add(tenant, kind, outcome, job_id, attempt, duration_ms, at_ms, error)

    def add(
        self,
        tenant: str,
        kind: str,
        outcome: str,
        job_id: str,
        attempt: int,
        duration_ms: int,
        at_ms: int,
        error: str | None = None,
    ) -> None:
        """`record` with the time in epoch milliseconds (the worker's per-job path)."""
        hour = at_ms // 3_600_000
        if self._hour[0] != hour:
            self._hour = (hour, hour_bucket(datetime.fromtimestamp(hour * 3600, UTC)))
        bucket = self._hour[1]
        slot = (at_ms // 60_000) % 60 // SLOT_MINUTES
        names = self._names.get((outcome, kind, slot))
        if names is None:
            names = self._names[(outcome, kind, slot)] = (f"{outcome}:{kind}", f"{outcome}@{slot}")
        counts = self._counts
        for name in names:
            key = (tenant, bucket, name)
            counts[key] = counts.get(key, 0) + 1
        recent = self._recent.get(tenant)
        if recent is None:
            recent = self._recent[tenant] = deque(maxlen=self._cap)
        recent.append((job_id, kind, outcome, attempt, duration_ms, at_ms, error))
        self._seen[tenant] = at_ms

    def recent_json(self, tenant: str) -> list[str]:
        """The buffered recent jobs of `tenant` as the JSON documents flushed."""
        return [_summary_json(item) for item in self._recent.get(tenant, ())]

    @property
    def pending(self) -> bool:
        """True if there is something to flush."""
        return bool(self._seen)

    async def flush(self, state: SharedState) -> None:
        """Write the buffer as one `CountBatch`; on a store error that buffer is dropped.

        Counters per stats hash and capped recent lists (both given `STATS_TTL_S` again),
        and the tenants' last activity (a score that only rises).
        """
        if not self._seen:
            return
        counts, recent, seen = self._counts, self._recent, self._seen
        self._counts, self._recent, self._seen = {}, {}, {}
        fields: dict[str, list[tuple[str, int]]] = {}
        for (tenant, bucket, name), value in counts.items():
            key = stats_key(self._prefix, tenant, bucket)
            found = fields.get(key)
            if found is None:
                found = fields[key] = []
            found.append((name, value))
        batch = CountBatch(
            ttl_s=STATS_TTL_S,
            keep=self._cap,
            counters=fields,
            lists={
                recent_key(self._prefix, tenant): [_summary_json(item) for item in summaries]
                for tenant, summaries in recent.items()
            },
            board=tenants_key(self._prefix),
            scores=[(at_ms, tenant) for tenant, at_ms in seen.items()],
        )
        try:
            await state.add_counts(batch)
        except Exception as exc:
            log.warning("stats.flush_failed", extra={"error": str(exc), "tenants": len(seen)})
