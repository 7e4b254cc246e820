"""Reading jobs and lanes on PostgreSQL: the same calls and records as queue/reads.py,
answered by SQL over `<schema>.job` (one row per job, its state a column).

Tenant filters run in the query, so another tenant's jobs are never read into a page.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Final

import psycopg

from settler_jobs.domain import JobState
from settler_jobs.queue.pg.pool import pg_errors
from settler_jobs.queue.pg.record import COLUMNS, record_from
from settler_jobs.queue.pg.rows import PgSql
from settler_jobs.queue.reads import JobPage, page_limit, parse_cursor
from settler_jobs.records import BacklogScan, JobRecord, QueueCounts, TenantBacklog

_STATES: Final = (
    JobState.WAITING,
    JobState.DELAYED,
    JobState.ACTIVE,
    JobState.COMPLETED,
    JobState.FAILED,
)
# Newest first inside a state, as the Redis lists and finished sets are read; waiting
# and delayed jobs in the order they will run.
_ORDER: Final[dict[JobState, str]] = {
    JobState.WAITING: "priority, seq",
    JobState.DELAYED: "process_at_ms, seq",
    JobState.ACTIVE: "processed_at_ms DESC NULLS LAST, seq DESC",
    JobState.COMPLETED: "finished_at_ms DESC, seq DESC",
    JobState.FAILED: "finished_at_ms DESC, seq DESC",
}
# The window of each (lane, state) list_jobs reads, as on Redis (bullmq's getJobs reads
# each zset from its highest score): waiting and delayed jobs last-to-run first, which
# bullmq's indexes serve backwards, so a page costs the same behind a million jobs.
_NEWEST: Final[dict[JobState, str]] = {
    JobState.WAITING: "priority DESC, seq DESC",
    JobState.DELAYED: "process_at_ms DESC, seq DESC",
    JobState.ACTIVE: "processed_at_ms DESC NULLS LAST, seq DESC",
    JobState.COMPLETED: "finished_at_ms DESC, seq DESC",
    JobState.FAILED: "finished_at_ms DESC, seq DESC",
}
_BACKLOG_STATES: Final = (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE)
COUNT_CACHE_FROM_JOBS: Final = 100_000
"""Jobs in the schema from which counts are shared between callers (see `counts`)."""
_COUNTS: Final = (
    "SELECT lane AS queue, lane_state AS state, jobs AS n, oldest_ms AS oldest"
    " FROM settler_counts(%s, %s, %s)"
)
_ANY_AGE_MS: Final = 2**62
COUNT_CACHE_AGE_MS: Final = 10_000
"""How old shared counts may be: longer than the depth loop's 5 s, so on a busy fleet the
workers keep the figures fresh and an API call (its statements bounded) rarely recounts."""


class PgReader(PgSql):
    """Reading jobs and lanes: one job, lists and pages, counts and finish rates, backlogs."""

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord:
        """One job; NotFound if missing or owned by another tenant than `tenant_id`."""
        async with pg_errors():
            return await self._get(job_id, tenant_id)

    async def list_jobs(
        self,
        *,
        kind: str | None = None,
        state: JobState | None = None,
        tenant_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Newest jobs first, optionally filtered; the tenant filter applies to the page.

        As on Redis, each lane and state gives its newest `offset + limit` jobs, then come
        the tenant filter, the sort (by creation, then insertion) and the slice.
        """
        limit = page_limit(limit, offset)
        states = [state] if state else list(_STATES)
        parts = [
            f"(SELECT j.* FROM unnest(%(lanes)s::text[]) AS l(q) CROSS JOIN LATERAL"
            f" (SELECT {COLUMNS} FROM job WHERE queue = l.q AND state = '{st.value}'"
            f" ORDER BY {_NEWEST[st]} LIMIT %(n)s) AS j)"
            for st in states
        ]
        sql = (
            "SELECT * FROM (" + " UNION ALL ".join(parts) + ") AS page"
            " WHERE %(tenant)s::text IS NULL OR data->>'tenantId' = %(tenant)s"
            " ORDER BY added_at_ms DESC, seq DESC LIMIT %(limit)s OFFSET %(offset)s"
        )
        params = {
            "lanes": self._lanes(kind),
            "n": offset + limit,
            "tenant": tenant_id,
            "limit": limit,
            "offset": offset,
        }
        async with pg_errors():
            rows = await self._rows(sql, params)
        return [self._record(row) for row in rows]

    def _lanes(self, kind: str | None) -> list[str]:
        kinds = [self._registry.get(kind)] if kind else list(self._registry)
        return [q for k in kinds for q in (k.queue, k.express_queue)]

    async def job_logs(
        self, job_id: str, *, tenant_id: str | None = None, limit: int = 200
    ) -> list[str]:
        """The newest `limit` log lines of a job (oldest first)."""
        async with pg_errors():
            record = await self._get(job_id, tenant_id)
            rows = await self._rows(
                "SELECT row FROM job_log WHERE queue = %s AND job_id = %s"
                " ORDER BY idx DESC LIMIT %s",
                (record.queue, job_id, max(0, limit)),
            )
        return [str(r["row"]) for r in reversed(rows)]

    async def browse(
        self,
        *,
        kind: str | None = None,
        state: JobState | None = None,
        tenant_id: str | None = None,
        cursor: str = "",
        limit: int = 50,
        scan_limit: int = 2000,
    ) -> JobPage:
        """A page of jobs read segment by segment (lane, state), in each state's order.

        The cursor is `<segment>:<offset>` as on Redis: offsets count the jobs read in a
        segment, so with a tenant filter at most `scan_limit` jobs are read per page
        (only their id and tenant) and `next_cursor` goes on from there.
        """
        limit = max(1, min(limit, 200))
        states = [state] if state else list(_STATES)
        lanes = self._lanes(kind)
        segments = [(q, s) for s in states for q in lanes]
        seg, offset = parse_cursor(cursor, len(segments))
        picked: list[tuple[str, str]] = []  # (queue, job id)
        scanned = 0
        async with pg_errors():
            while seg < len(segments) and len(picked) < limit and scanned < scan_limit:
                queue, st = segments[seg]
                want = limit - len(picked) if tenant_id is None else min(200, scan_limit - scanned)
                rows = await self._rows(
                    "SELECT id, data->>'tenantId' AS tenant FROM job"
                    f" WHERE queue = %s AND state = '{st.value}'"
                    f" ORDER BY {_ORDER[st]} LIMIT %s OFFSET %s",
                    (queue, want, offset),
                )
                taken = 0
                for row in rows:
                    taken += 1
                    if tenant_id is None or row["tenant"] == tenant_id:
                        picked.append((queue, str(row["id"])))
                        if len(picked) == limit:
                            break
                scanned += taken
                offset += taken
                if len(rows) < want and len(picked) < limit:
                    seg, offset = seg + 1, 0
            records = await self._records(picked)
        more = seg < len(segments)
        return JobPage(records, f"{seg}:{offset}" if more else None, scanned)

    async def _records(self, picked: list[tuple[str, str]]) -> list[JobRecord]:
        """The picked jobs' records in the picked order (jobs gone meanwhile left out)."""
        if not picked:
            return []
        rows = await self._rows(
            f"SELECT {COLUMNS} FROM job j JOIN unnest(%s::text[], %s::text[])"
            " WITH ORDINALITY AS p(q, i, n) ON j.queue = p.q AND j.id = p.i ORDER BY p.n",
            ([q for q, _ in picked], [i for _, i in picked]),
        )
        return [self._record(row) for row in rows]

    async def finished_per_minute(self, minutes: int = 60) -> dict[str, list[tuple[int, int]]]:
        """Per lane, (completed, failed) per minute over the last `minutes`, oldest first.

        Counted from finished rows (by finish time): removed jobs are not counted.
        """
        now_min = int(time.time()) // 60
        first = now_min - minutes + 1
        queues = self._registry.queues()
        async with pg_errors():
            rows = await self._rows(
                "SELECT queue, state::text AS state, finished_at_ms / 60000 AS minute,"
                " count(*) AS n FROM job WHERE queue = ANY(%s)"
                " AND state IN ('completed', 'failed') AND finished_at_ms >= %s"
                " GROUP BY 1, 2, 3",
                (queues, first * 60_000),
            )
        grid = {q: [[0, 0] for _ in range(minutes)] for q in queues}
        for row in rows:
            index = int(row["minute"]) - first
            if 0 <= index < minutes:
                grid[str(row["queue"])][index][row["state"] == "failed"] += int(row["n"])
        return {q: [(c, f) for c, f in cells] for q, cells in grid.items()}

    async def counts(self) -> list[QueueCounts]:
        """Per-lane counts by state and the age of the oldest waiting job.

        Exact while the schema holds fewer than COUNT_CACHE_FROM_JOBS jobs; beyond that
        (a count is a scan) one process recounts at a time and the figures may be up to
        COUNT_CACHE_AGE_MS old (`settler_counts` in queue/pg/sql/0101_counts.sql). A recount
        cut by this pool's statement limit (the API's) answers the last shared figures.
        """
        now_ms = int(time.time() * 1000)
        queues = self._registry.queues()
        async with pg_errors():
            try:
                rows = await self._rows(
                    _COUNTS, (now_ms, COUNT_CACHE_FROM_JOBS, COUNT_CACHE_AGE_MS)
                )
            except psycopg.errors.QueryCanceled:
                # A recount outlasted this pool's statement limit (the API's): the last
                # shared figures, however old (a small schema has none: it recounts).
                rows = await self._rows(_COUNTS, (now_ms, COUNT_CACHE_FROM_JOBS, _ANY_AGE_MS))
        counts: dict[str, dict[str, int]] = {q: {s.value: 0 for s in _STATES} for q in queues}
        oldest: dict[str, int] = {}
        for row in rows:
            if str(row["queue"]) not in counts:
                continue
            state = JobState.from_bullmq(str(row["state"])).value
            if state in counts[str(row["queue"])]:
                counts[str(row["queue"])][state] += int(row["n"])
            if row["oldest"] is not None:
                oldest[str(row["queue"])] = int(row["oldest"])
        return [
            QueueCounts(q, counts[q], now_ms - oldest[q] if q in oldest else None) for q in queues
        ]

    async def finished_since(self, window_s: float) -> dict[str, tuple[int, int]]:
        """Per lane: jobs (completed, failed) in the last `window_s` seconds."""
        since = int(time.time() * 1000) - round(window_s * 1000)
        queues = self._registry.queues()
        async with pg_errors():
            rows = await self._rows(
                "SELECT queue, count(*) FILTER (WHERE state = 'completed') AS c,"
                " count(*) FILTER (WHERE state = 'failed') AS f FROM job"
                " WHERE queue = ANY(%s) AND state IN ('completed', 'failed')"
                " AND finished_at_ms >= %s GROUP BY 1",
                (queues, since),
            )
        found = {str(r["queue"]): (int(r["c"]), int(r["f"])) for r in rows}
        return {q: found.get(q, (0, 0)) for q in queues}

    async def oldest_active_s(self, *, scan: int = 1000) -> dict[str, float]:
        """Per lane: seconds the longest-active job has run; 0 if none.

        `scan` is kept for the Redis signature: the minimum is read from the index.
        """
        now_ms = int(time.time() * 1000)
        queues = self._registry.queues()
        async with pg_errors():
            rows = await self._rows(
                "SELECT queue, min(processed_at_ms) AS first FROM job"
                " WHERE queue = ANY(%s) AND state = 'active' GROUP BY 1",
                (queues,),
            )
        first = {str(r["queue"]): r["first"] for r in rows}
        return {
            q: max(0.0, (now_ms - int(first[q])) / 1000) if first.get(q) else 0.0 for q in queues
        }

    async def failed_since(self, queue: str, after_ms: int, limit: int = 500) -> list[JobRecord]:
        """Failed jobs of a lane whose failure time is at or after `after_ms`, oldest first."""
        kind = self._registry.for_queue(queue).name
        async with pg_errors():
            rows = await self._rows(
                f"SELECT {COLUMNS} FROM job WHERE queue = %s AND state = 'failed'"
                " AND finished_at_ms >= %s ORDER BY finished_at_ms, seq LIMIT %s",
                (queue, after_ms, max(1, limit)),
            )
        # The first failure time rides in the job's opts (FIRST_FAILED, set by the lane).
        return [record_from(row, kind) for row in rows]

    async def tenant_backlog(self, *, per_lane: int = 1000) -> BacklogScan:
        """Unfinished jobs per tenant, from at most `per_lane` jobs per lane and state.

        Waiting jobs are read in run order; `truncated` says some lane held more.
        """
        per_lane = max(1, min(per_lane, 10_000))
        async with pg_errors():
            # One branch per state, the state a literal: each then reads its partial index
            # in its order and stops after per_lane + 1 rows, whatever the backlog.
            parts = [
                f"(SELECT l.queue, '{st.value}' AS state, j.tenant, j.added_at_ms, j.rank"
                " FROM unnest(%(lanes)s::text[]) AS l(queue) CROSS JOIN LATERAL"
                " (SELECT data->>'tenantId' AS tenant, added_at_ms,"
                f" row_number() OVER (ORDER BY {_ORDER[st]}) AS rank FROM job"
                f" WHERE job.queue = l.queue AND job.state = '{st.value}'"
                f" ORDER BY {_ORDER[st]} LIMIT %(n)s) AS j)"
                for st in _BACKLOG_STATES
            ]
            rows = await self._rows(
                " UNION ALL ".join(parts), {"lanes": self._registry.queues(), "n": per_lane + 1}
            )
        truncated = any(int(r["rank"]) > per_lane for r in rows)
        kept = [r for r in rows if int(r["rank"]) <= per_lane]
        return BacklogScan(self._tally(kept), len(kept), truncated)

    def _tally(self, rows: list[dict[str, Any]]) -> dict[str, TenantBacklog]:
        tenants: dict[str, TenantBacklog] = {}
        for row in rows:
            tenant = row["tenant"]
            if not tenant:
                continue
            entry = tenants.setdefault(str(tenant), TenantBacklog({}, {}, {}, None))
            counts: dict[str, int] = getattr(entry, str(row["state"]))
            kind = self._registry.for_queue(str(row["queue"])).name
            counts[kind] = counts.get(kind, 0) + 1
            if row["state"] == "waiting":
                stamp = int(row["added_at_ms"])
                oldest = entry.oldest_waiting_created_ms
                if oldest is None or stamp < oldest:
                    tenants[str(tenant)] = replace(entry, oldest_waiting_created_ms=stamp)
        return tenants
