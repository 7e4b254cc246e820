"""Dead-letter triage: filters, notes, resolve, retry and bulk retry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from settler_jobs.dashboard.session import Session
from settler_jobs.dashboard.web import (
    PREFIX,
    back,
    checked_form,
    context,
    render,
    require_session,
    text_field,
)
from settler_jobs.dlq import capture as dead_letters
from settler_jobs.dlq import store as dlq
from settler_jobs.domain import DlqStatus
from settler_jobs.errors import InvalidState, NotFound, SettlerError

router = APIRouter()
Operator = Annotated[Session, Depends(require_session)]
ACTOR = "operator (dashboard)"
MAX_BULK = 100


@router.get("/dlq")
async def dlq_page(
    request: Request,
    session: Operator,
    tenant: Annotated[str, Query(max_length=64)] = "",
    kind: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=16)] = "open",
    before: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Entries newest first, filtered, 50 a page."""
    ctx = context(request)
    error = ""
    entries: list[dlq.DlqEntry] = []
    try:
        state = DlqStatus(status) if status else None
        async with ctx.services.sessions() as db:
            entries = await dlq.list_entries(
                db,
                tenant_id=tenant or None,
                kind=kind or None,
                status=state,
                limit=50,
                before=before or None,
            )
    except (ValueError, NotFound) as exc:
        error = str(exc)
    return render(
        request,
        "dlq.html",
        session,
        entries=entries,
        error=error,
        filters={"tenant": tenant, "kind": kind, "status": status},
        statuses=[s.value for s in DlqStatus],
        kinds=[k.name for k in ctx.services.queue.registry],
        query=request.url.query,
    )


def _here(request: Request) -> str:
    referer = request.headers.get("referer", "")
    marker = f"{PREFIX}/dlq"
    start = referer.find(marker)
    if start < 0:
        return marker
    tail = referer[start:].split("flash=")[0].rstrip("?&")
    return tail or marker


@router.post("/dlq/bulk-retry")
async def bulk_retry(request: Request, session: Operator) -> Response:
    """Retry the checked open entries (at most 100 at once)."""
    form = await checked_form(request, session)
    ids = [i for i in form.getlist("entry") if isinstance(i, str)][:MAX_BULK]
    ctx = context(request)
    done, failed = 0, 0
    for entry_id in ids:
        try:
            await dead_letters.retry_entry(
                ctx.services.queue, ctx.services.sessions, entry_id, actor=ACTOR
            )
            done += 1
        except SettlerError:
            failed += 1
    return back(_here(request), f"Retried {done} entries; {failed} could not be retried.")


@router.post("/dlq/{entry_id}/{action}")
async def entry_action(request: Request, session: Operator, entry_id: str, action: str) -> Response:
    """Resolve, note or retry one entry."""
    form = await checked_form(request, session)
    note = text_field(form, "note", max_len=dlq.MAX_NOTE)
    ctx = context(request)
    now = datetime.now(UTC)
    try:
        if action == "retry":
            _, submitted = await dead_letters.retry_entry(
                ctx.services.queue, ctx.services.sessions, entry_id, actor=ACTOR
            )
            message = f"Retried as job {submitted.job.id}."
        elif action in ("resolve", "note"):
            async with ctx.services.sessions() as db, db.begin():
                if action == "resolve":
                    await dlq.resolve(db, entry_id, note=note, actor=ACTOR, now=now)
                    message = "Resolved."
                else:
                    await dlq.add_note(db, entry_id, note=note, actor=ACTOR, now=now)
                    message = "Note added."
        else:
            return render(request, "missing.html", session, 404, what=f"action {action}")
    except (InvalidState, NotFound, ValueError, SettlerError) as exc:
        message = str(exc)
    return back(_here(request), message)
