"""Queue health for operators: per-kind counts, throughput, oldest waiting age; pause/resume.

Counts span every tenant, so these routes take the operator token.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Path

from settler_jobs.api.deps import Context, Operator
from settler_jobs.api.errors import ERROR_RESPONSES
from settler_jobs.api.schemas import LaneOut, PausedOut, QueueOut
from settler_jobs.records import QueueCounts

router = APIRouter(prefix="/admin/queues", tags=["queues (operator)"], responses=ERROR_RESPONSES)
Kind = Annotated[str, Path(min_length=1, max_length=64)]
THROUGHPUT_WINDOW_S: Final = 60.0


def _summed(lanes: list[QueueCounts]) -> dict[str, int]:
    total: dict[str, int] = {}
    for lane in lanes:
        for state, count in lane.counts.items():
            total[state] = total.get(state, 0) + count
    return total


@router.get("", response_model=list[QueueOut])
async def list_queues(_: Operator, ctx: Context) -> list[QueueOut]:
    """Every kind: counts by state, jobs finished in the last minute, oldest waiting age."""
    queue = ctx.services.queue
    lanes = {c.queue: c for c in await queue.counts()}
    finished = await queue.finished_since(THROUGHPUT_WINDOW_S)
    out = []
    for kind in queue.registry:
        mine = [lanes[q] for q in (kind.queue, kind.express_queue) if q in lanes]
        ages = [c.oldest_waiting_ms for c in mine if c.oldest_waiting_ms is not None]
        done = [finished.get(c.queue, (0, 0)) for c in mine]
        out.append(
            QueueOut(
                kind=kind.name,
                counts=_summed(mine),
                completed_per_min=sum(c for c, _ in done),
                failed_per_min=sum(f for _, f in done),
                oldest_waiting_ms=max(ages) if ages else None,
                lanes=[
                    LaneOut(queue=c.queue, counts=c.counts, oldest_waiting_ms=c.oldest_waiting_ms)
                    for c in mine
                ],
            )
        )
    return out


@router.post("/{kind}/pause", response_model=PausedOut)
async def pause(kind: Kind, _: Operator, ctx: Context) -> PausedOut:
    """Stop workers from starting jobs of this kind (both lanes); running ones finish."""
    await ctx.services.queue.pause(kind)
    return PausedOut(kind=kind, paused=True)


@router.post("/{kind}/resume", response_model=PausedOut)
async def resume(kind: Kind, _: Operator, ctx: Context) -> PausedOut:
    """Let workers start jobs of this kind again."""
    await ctx.services.queue.resume(kind)
    return PausedOut(kind=kind, paused=False)
