"""Submitting jobs on PostgreSQL: the Redis producer's validation, ids, options and
fair-share semantics, written by one `settler_add_jobs` call per chunk (sql/0002).

A bulk is one transaction: a quota refusal anywhere adds nothing. `submit_bulk_on`
runs inside a caller's transaction, so a domain row and its job commit together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from settler_jobs.errors import QuotaExceeded
from settler_jobs.queue.fair import REFUSALS_KEY
from settler_jobs.queue.pg.base import BULK_CHUNK, JOB_COLUMNS, PgQueueBase
from settler_jobs.queue.pg.pool import BROKEN, Conn, pg_errors
from settler_jobs.queue.producer import _new_record, _Prepared, prepare
from settler_jobs.records import Submission, Submitted


class _Refused(Exception):
    """settler_add_jobs refused a tenant: nothing of the bulk was added."""

    def __init__(self, tenant_id: str, backlog: int, quota: int, adds: int, tier: str) -> None:
        super().__init__(tenant_id)
        self.tenant_id = tenant_id
        self.backlog = backlog
        self.quota = quota
        self.adds = adds
        self.tier = tier


class PgProducer(PgQueueBase):
    """Submitting jobs: one or many, validated first, idempotent repeats answered."""

    async def submit(self, sub: Submission) -> Submitted:
        """Validate and enqueue one job; an idempotent repeat returns the existing job."""
        return (await self.submit_bulk([sub]))[0]

    async def submit_bulk(self, subs: Sequence[Submission]) -> list[Submitted]:
        """Validate every submission first, then add them all in one transaction.

        The common case (no idempotency keys, one chunk) is a single statement.
        """
        now_ms = int(time.time() * 1000)
        prepared = [prepare(self._registry, self._settings, sub, now_ms) for sub in subs]
        await self.ready()
        single = len(prepared) <= BULK_CHUNK and not any(p.idempotent for p in prepared)
        scope = self._pool.connection if single else self._pool.transaction
        try:
            try:
                async with scope() as conn:
                    return await self._write(conn, prepared)
            except BROKEN:
                # A pooled connection the server ended (restart, termination): once more
                # on a fresh one. The ids are fixed, so a lost commit is not added twice.
                async with pg_errors(), scope() as conn:
                    return await self._write(conn, prepared)
        except _Refused as refused:
            await self._count_refusal(refused.tier)
            raise QuotaExceeded(
                refused.tenant_id,
                refused.backlog,
                refused.adds,
                refused.quota,
                self._settings.quota_retry_after_s,
            ) from None

    async def submit_bulk_on(self, conn: Conn, subs: Sequence[Submission]) -> list[Submitted]:
        """`submit_bulk` inside the caller's open transaction on `conn` (of this schema).

        The jobs become visible (and workers wake) when the caller commits. A quota
        refusal raises `QuotaExceeded`; the caller should roll back.
        """
        now_ms = int(time.time() * 1000)
        prepared = [prepare(self._registry, self._settings, sub, now_ms) for sub in subs]
        try:
            return await self._write(conn, prepared)
        except _Refused as refused:
            raise QuotaExceeded(
                refused.tenant_id,
                refused.backlog,
                refused.adds,
                refused.quota,
                self._settings.quota_retry_after_s,
            ) from None

    async def _write(self, conn: Conn, prepared: list[_Prepared]) -> list[Submitted]:
        queues = self._registry.queues()
        idempotent = sorted({p.job_id for p in prepared if p.idempotent})
        existing: set[str] = set()
        if idempotent:
            cur = await conn.execute(
                f"SELECT id FROM {self._s}.job WHERE id = ANY(%s) AND queue = ANY(%s)".encode(),
                (idempotent, queues),
            )
            existing = {str(r[0]) for r in await cur.fetchall()}
        first: dict[str, int] = {}
        for index, p in enumerate(prepared):
            if p.job_id not in existing and p.job_id not in first:
                first[p.job_id] = index
        adding = [prepared[i] for i in first.values()]
        inserted: set[str] = set()
        if adding:
            fair = self._settings.fair_share
            quotas, checks, lanes = self._quotas(adding) if fair else ({}, {}, [])
            if not fair:
                lanes = sorted({p.queue for p in adding})
            for start in range(0, len(adding), BULK_CHUNK):
                chunk = adding[start : start + BULK_CHUNK]
                adds = {t: sum(1 for p in chunk if p.tenant_id == t) for t in checks}
                reply = await self._add(conn, lanes, fair, chunk, checks, adds)
                if "refused" in reply:
                    tenant, backlog, quota = reply["refused"]
                    tier = next(p.tier.value for p in adding if p.tenant_id == tenant)
                    raise _Refused(tenant, int(backlog), int(quota), quotas[tenant][1], tier)
                for p, priority in zip(chunk, reply["p"], strict=True):
                    p.opts["priority"] = int(priority)
                inserted.update(str(i) for i in reply["added"])
        stored = await self._stored(conn, prepared, inserted)
        out: list[Submitted] = []
        for index, p in enumerate(prepared):
            added = first.get(p.job_id) == index and p.job_id in inserted
            local = _new_record(p)
            if added and not p.idempotent:
                out.append(Submitted(local, True))  # a random id cannot have been taken
                continue
            record = stored.get(p.job_id)
            if record is None:  # already run and removed: it was ours if we added it
                out.append(Submitted(local, added))
                continue
            # A concurrent producer may have won the race: then the job is theirs.
            ours = added and record.created_at_ms == local.created_at_ms
            out.append(Submitted(record, ours and record.payload == local.payload))
        return out

    def _quotas(
        self, adding: list[_Prepared]
    ) -> tuple[dict[str, tuple[int, int]], dict[str, int], list[str]]:
        """(tenant -> (quota, adds)), tenant -> quota for those with one, lanes to sum."""
        quotas: dict[str, tuple[int, int]] = {}
        for p in adding:
            quota, count = quotas.get(
                p.tenant_id, (self._settings.tenant_backlog_quotas.get(p.tier.value, 0), 0)
            )
            quotas[p.tenant_id] = (quota, count + 1)
        checks = {t: q for t, (q, _) in quotas.items() if q > 0}
        lanes = self._registry.queues() if checks else sorted({p.queue for p in adding})
        return quotas, checks, lanes

    async def _add(
        self,
        conn: Conn,
        lanes: list[str],
        fair: bool,
        chunk: list[_Prepared],
        checks: dict[str, int],
        adds: dict[str, int],
    ) -> dict[str, Any]:
        jobs = [
            {
                "q": p.queue,
                "id": p.job_id,
                "name": p.kind,
                "data": p.data,
                "opts": p.opts,
                "t": p.tenant_id,
                "c": p.tagged.priority.value,
                "step": p.tagged.step,
                "delay": p.opts["delay"],
                "ts": p.opts["timestamp"],
                "att": p.opts["attempts"],
                "prio": p.opts["priority"],
            }
            for p in chunk
        ]
        quotas = [[t, q, adds[t]] for t, q in checks.items() if adds.get(t)]
        cur = await conn.execute(
            f"SELECT {self._s}.settler_add_jobs(%s, %s, %s, %s, %s::jsonb, %s::jsonb)".encode(),
            (
                lanes,
                fair,
                self._settings.fair_rebase_at,
                self._settings.fair_horizon,
                json.dumps(quotas),
                json.dumps(jobs, separators=(",", ":")),
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        reply: dict[str, Any] = row[0]
        return reply

    async def _stored(
        self, conn: Conn, prepared: list[_Prepared], inserted: set[str]
    ) -> dict[str, Any]:
        """The stored records of jobs that may not be ours (idempotent or not inserted)."""
        ids = sorted({p.job_id for p in prepared if p.idempotent or p.job_id not in inserted})
        if not ids:
            return {}
        cur = await conn.execute(
            f"SELECT {JOB_COLUMNS} FROM {self._s}.job "
            "WHERE id = ANY(%s) AND queue = ANY(%s)".encode(),
            (ids, self._registry.queues()),
        )
        return {str(r[1]): self.record_of(r) for r in await cur.fetchall()}

    async def _count_refusal(self, tier: str) -> None:
        async with pg_errors(), self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO settler_fair_counter (queue, key, n) VALUES (%s, %s, 1) "
                "ON CONFLICT (queue, key) DO UPDATE SET n = settler_fair_counter.n + 1",
                (REFUSALS_KEY, tier),
            )
