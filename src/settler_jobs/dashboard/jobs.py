"""The job list and the job detail page with its actions (login lives in login.py)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from settler_jobs.dashboard.session import Session
from settler_jobs.dashboard.web import PREFIX, back, checked_form, context, render, require_session
from settler_jobs.domain import JobState
from settler_jobs.errors import InvalidJob, InvalidState, NotFound

router = APIRouter()
Operator = Annotated[Session, Depends(require_session)]


def _state(value: str) -> JobState | None:
    if not value:
        return None
    try:
        return JobState(value)
    except ValueError:
        raise InvalidJob(f"unknown state {value!r}") from None


@router.get("/jobs")
async def jobs_page(
    request: Request,
    session: Operator,
    job_id: Annotated[str, Query(max_length=128)] = "",
    tenant: Annotated[str, Query(max_length=64)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    kind: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    """Jobs by id, or paged by kind, state and tenant."""
    queue = context(request).services.queue
    if job_id:
        return RedirectResponse(f"{PREFIX}/jobs/{quote(job_id, safe='')}", status_code=303)
    error = ""
    page = None
    try:
        page = await queue.browse(
            kind=kind or None, state=_state(state), tenant_id=tenant or None, cursor=cursor
        )
    except (InvalidJob, NotFound) as exc:
        error = str(exc)
    return render(
        request,
        "_jobs_table.html" if request.headers.get("HX-Request") else "jobs.html",
        session,
        page=page,
        error=error,
        filters={"tenant": tenant, "state": state, "kind": kind},
        kinds=[k.name for k in queue.registry],
        states=[
            s.value
            for s in (
                JobState.WAITING,
                JobState.DELAYED,
                JobState.ACTIVE,
                JobState.COMPLETED,
                JobState.FAILED,
            )
        ],
    )


@router.get("/jobs/{job_id}")
async def job_page(request: Request, session: Operator, job_id: str) -> Response:
    """One job: data, progress, attempts, logs, failure; its actions."""
    queue = context(request).services.queue
    try:
        job = await queue.get(job_id)
        logs = await queue.job_logs(job_id)
    except NotFound:
        return render(request, "missing.html", session, 404, what=f"job {job_id}")
    return render(request, "job.html", session, job=job, logs=logs)


@router.post("/jobs/{job_id}/{action}")
async def job_action(request: Request, session: Operator, job_id: str, action: str) -> Response:
    """Retry, cancel or promote a job."""
    await checked_form(request, session)
    queue = context(request).services.queue
    url = f"{PREFIX}/jobs/{job_id}"
    try:
        if action == "retry":
            await queue.retry(job_id)
            message = "Job queued again."
        elif action == "cancel":
            state = await queue.cancel(job_id)
            message = "Job cancelled." if state is JobState.CANCELLED else "Cancel requested."
            if state is JobState.CANCELLED:
                url = f"{PREFIX}/jobs"
        elif action == "promote":
            await queue.promote(job_id)
            message = "Job promoted."
        else:
            return render(request, "missing.html", session, 404, what=f"action {action}")
    except (InvalidState, NotFound) as exc:
        message = str(exc)
    return back(url, message)


@router.get("/")
async def home(session: Operator) -> Response:
    """The overview."""
    return RedirectResponse(f"{PREFIX}/overview", status_code=303)
