"""Transactional enqueue: jobs added by `SELECT <schema>.add_job(...)` on the caller's
own connection, inside the caller's transaction (the queue tables live in the same
PostgreSQL database as Settler's). The domain row and its job commit together or not
at all; bullmq's NOTIFY reaches workers at commit.

Validation, ids, the envelope and options are the producer's (`producer.prepare`), so a
job looks the same whichever path added it. Idempotent ids answer the stored job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from settler_jobs.errors import InvalidJob
from settler_jobs.ports import SqlRun
from settler_jobs.queue.pg.record import COLUMNS
from settler_jobs.queue.pg.rows import PgSql
from settler_jobs.queue.producer import _new_record, _Prepared, prepare
from settler_jobs.records import Submission, Submitted

# Same arguments as bullmq's backend passes to add_job (backends/postgres_backend.py).
_ADD = (
    "SELECT {s}.add_job(:queue, :id, :name, CAST(:data AS jsonb), CAST(:opts AS jsonb),"
    " :priority, :delay, :ts, :attempts, NULL, NULL, NULL, NULL, NULL, false) AS id"
)
_FIND = (
    "SELECT queue, id FROM {s}.job"
    " WHERE queue = ANY(CAST(:queues AS text[])) AND id = ANY(CAST(:ids AS text[]))"
)


class PgTransactionalProducer(PgSql):
    """`submit_in`: add jobs inside the caller's transaction."""

    async def submit_in(self, run: SqlRun, subs: Sequence[Submission]) -> list[Submitted]:
        """Validate every submission, then add the jobs through `run` (the caller's
        transaction). Rolling that transaction back removes the jobs too.
        """
        now_ms = int(time.time() * 1000)
        prepared = [prepare(self._registry, self._settings, sub, now_ms) for sub in subs]
        schema = f'"{self._pool.schema}"'
        lanes = self._registry.queues()
        existing = {
            str(row["id"]): row
            for row in await run(
                _FIND.format(s=schema),
                {"queues": lanes, "ids": [p.job_id for p in prepared if p.idempotent]},
            )
        }
        out: list[Submitted] = []
        added: set[str] = set()
        for p in await self._prioritised(run, prepared):
            if p.job_id in existing:
                row = existing[p.job_id]
                out.append(Submitted(await self._stored(run, row), False))
                continue
            if p.job_id in added:
                out.append(Submitted(_new_record(p), False))
                continue
            await run(_ADD.format(s=schema), _params(p))
            added.add(p.job_id)
            out.append(Submitted(_new_record(p), True))
        return out

    async def _prioritised(self, run: SqlRun, prepared: list[_Prepared]) -> list[_Prepared]:
        """The jobs with the priorities they are added with.

        The seam for fair-share tags computed in SQL on the same transaction; without
        one, each job keeps the class-and-tier priority the producer computed.
        """
        del run
        return prepared

    async def _stored(self, run: SqlRun, row: Any) -> Any:
        rows = await run(
            f'SELECT {COLUMNS} FROM "{self._pool.schema}".job WHERE queue = :queue AND id = :id',
            {"queue": row["queue"], "id": row["id"]},
        )
        if not rows:
            raise InvalidJob(f"job {row['id']!r} vanished while it was being added")
        return self._record(_decoded(rows[0]))


def _params(p: _Prepared) -> dict[str, Any]:
    return {
        "queue": p.queue,
        "id": p.job_id,
        "name": p.kind,
        "data": json.dumps(p.data, separators=(",", ":")),
        "opts": json.dumps(p.opts, separators=(",", ":")),
        "priority": int(p.opts["priority"]),
        "delay": int(p.opts["delay"]),
        "ts": int(p.opts["timestamp"]),
        "attempts": int(p.opts["attempts"]),
    }


def _decoded(row: Any) -> dict[str, Any]:
    # asyncpg hands jsonb back as text.
    out = dict(row)
    for key in ("data", "opts", "progress", "return_value", "stacktrace"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
