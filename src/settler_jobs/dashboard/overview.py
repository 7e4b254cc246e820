"""The overview: counts per kind, throughput and depth over the last hour, failure rate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from settler_jobs.alerts import depth_history
from settler_jobs.dashboard.charts import bar_chart, line_chart
from settler_jobs.dashboard.session import Session
from settler_jobs.dashboard.web import context, render, require_session, state_redis

router = APIRouter()
Operator = Annotated[Session, Depends(require_session)]
STATES = ("waiting", "active", "delayed", "completed", "failed")


@router.get("/overview")
async def overview(request: Request, session: Operator) -> Response:
    """Per-kind counts and last-hour charts."""
    ctx = context(request)
    queue = ctx.services.queue
    counts = {c.queue: c for c in await queue.counts()}
    finished = await queue.finished_per_minute(60)
    lanes = list(counts)
    depth = await depth_history.read(state_redis(ctx), ctx.settings.queue_prefix, lanes, 60)
    kinds = []
    total = [(0, 0)] * 60
    for kind in queue.registry:
        lanes_of = [q for q in (kind.queue, kind.express_queue) if q in counts]
        row = {s: sum(counts[q].counts.get(s, 0) for q in lanes_of) for s in STATES}
        per_min = [
            (sum(finished[q][m][0] for q in lanes_of), sum(finished[q][m][1] for q in lanes_of))
            for m in range(60)
        ]
        total = [(a + c, b + d) for (a, b), (c, d) in zip(total, per_min, strict=True)]
        done = sum(ok for ok, _ in per_min)
        failed = sum(f for _, f in per_min)
        rate = f"{100 * failed / (done + failed):.1f}%" if done + failed else "-"
        kinds.append(
            {"name": kind.name, **row, "hour_ok": done, "hour_failed": failed, "failure_rate": rate}
        )
    waiting_by_minute: dict[int, int] = {}
    for samples in depth.values():
        for s in samples:
            waiting_by_minute[s.minute] = waiting_by_minute.get(s.minute, 0) + s.waiting
    depth_values = [waiting_by_minute[m] for m in sorted(waiting_by_minute)][-60:]
    done = sum(ok for ok, _ in total)
    failed = sum(f for _, f in total)
    return render(
        request,
        "overview.html",
        session,
        kinds=kinds,
        throughput=bar_chart(total),
        depth=line_chart(depth_values),
        hour_done=done,
        hour_failed=failed,
        failure_rate=f"{100 * failed / (done + failed):.1f}%" if done + failed else "-",
    )
