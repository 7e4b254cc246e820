"""The delivery log's hot path for group commits: many attempts begun (or recorded) in one
transaction, with a fixed number of statements whatever the batch size.

`begin_attempts_on` / `record_attempts_on` do what `delivery_log.begin_attempt_on` /
`record_attempt_on` do for each request (see `storage.db.GroupCommit`): one read of the
deliveries (locked: FOR UPDATE on PostgreSQL, the write lock taken at BEGIN on SQLite,
see `storage.db.Transactions`), then one many-row update (and insert), so a batch costs
three round trips to the server, not two per delivery. A delivery that appears twice in a
batch is handled one request at a time after the others (each sees the previous one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from settler_jobs import errors
from settler_jobs.webhooks.delivery_log import (
    _AT,
    _DT,
    Started,
    _begin_row,
    _error_text,
    _healthy,
    _joined_rows,
    _record_health,
    _settled,
    begin_attempt_on,
    record_attempt_on,
)
from settler_jobs.webhooks.values import (
    ACTIVE,
    MAX_EXCERPT,
    OUTCOMES,
    Delivery,
    DeliveryStatus,
    Endpoint,
    to_value,
)

_DELIVERING = DeliveryStatus.DELIVERING.value
_RECORDED: Final = ("status", "next_attempt_at", "last_status_code", "last_error", "updated_at")

# Built once: a statement object keeps its cache key, so a batch only binds its rows.
_BEGIN_MANY: Final = (
    update(_DT)
    .where(
        _DT.c.id == bindparam("b_id"),
        _DT.c.status == bindparam("b_status"),
        _DT.c.generation == bindparam("b_generation"),
    )
    .values(
        status=_DELIVERING,
        attempts=bindparam("b_attempts", type_=_DT.c.attempts.type),
        next_attempt_at=None,
        updated_at=bindparam("b_now", type_=_DT.c.updated_at.type),
    )
)
_RECORD_READ: Final = (
    select(_DT).where(_DT.c.id.in_(bindparam("ids", expanding=True))).order_by(_DT.c.id)
)
_RECORD_READ_LOCKED: Final = _RECORD_READ.with_for_update()
_RECORD_MANY: Final = (
    update(_DT)
    .where(_DT.c.id == bindparam("r_id"))
    .values({name: bindparam(f"r_{name}", type_=_DT.c[name].type) for name in _RECORDED})
)
_INSERT_ATTEMPTS: Final = insert(_AT)


@dataclass(frozen=True)
class BeginRequest:
    """One `begin_attempt_on` call."""

    delivery_id: str
    now: datetime
    generation: int | None = None


@dataclass(frozen=True)
class RecordRequest:
    """One `record_attempt_on` call (its keywords)."""

    delivery_id: str
    attempt_no: int
    started_at: datetime
    status_code: int | None
    latency_ms: int
    error_class: str | None
    response_excerpt: str
    next_retry_at: datetime | None
    outcome: str
    now: datetime
    endpoint: Endpoint | None = None


def _split_repeats(ids: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indexes of first occurrences, and of repeats, of the ids."""
    seen: set[str] = set()
    first: list[int] = []
    repeats: list[int] = []
    for i, delivery_id in enumerate(ids):
        (repeats if delivery_id in seen else first).append(i)
        seen.add(delivery_id)
    return first, repeats


def begin_attempts_on(
    conn: Connection, requests: Sequence[BeginRequest]
) -> list[Started | Exception]:
    """`begin_attempt_on` for each request; NotFound / InvalidState as that one's result."""
    first, repeats = _split_repeats([r.delivery_id for r in requests])
    rows = _joined_rows(conn, sorted({r.delivery_id for r in requests}))
    results: list[Started | Exception | None] = [None] * len(requests)
    moves: list[dict[str, Any]] = []
    for i in first:
        request = requests[i]
        row = rows.get(request.delivery_id)
        if row is None:
            results[i] = errors.NotFound(f"no webhook delivery {request.delivery_id!r}")
            continue
        sending = (
            row.d_status in ACTIVE
            and request.generation in (None, row.d_generation)
            and row.e_enabled
        )
        if not sending:  # nothing to send (or a disabled endpoint): the single path
            results[i] = _attempt(
                _begin_row, conn, row, now=request.now, generation=request.generation
            )
            continue
        moves.append(
            {
                "b_id": row.d_id,
                "b_status": row.d_status,
                "b_generation": row.d_generation,
                "b_attempts": row.d_attempts + 1,
                "b_now": request.now,
            }
        )
        results[i] = _begin_row(conn, row, now=request.now, generation=None, write=False)
    if moves:
        stmt = _BEGIN_MANY
        moved = conn.execute(stmt, moves).rowcount
        if moved not in (-1, len(moves)):  # cannot happen under the locks taken above
            raise errors.InvalidState("webhook deliveries changed while starting")
    for i in repeats:
        request = requests[i]
        results[i] = _attempt(
            begin_attempt_on,
            conn,
            request.delivery_id,
            now=request.now,
            generation=request.generation,
        )
    return [r for r in results if r is not None]


def _attempt(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (errors.NotFound, errors.InvalidState) as exc:
        return exc


def record_attempts_on(
    conn: Connection, requests: Sequence[RecordRequest]
) -> list[Delivery | Exception]:
    """`record_attempt_on` for each request; NotFound as that one's result."""
    for request in requests:
        if _kind(request.outcome) not in OUTCOMES:
            raise ValueError(f"unknown outcome {request.outcome!r}")
    first, repeats = _split_repeats([r.delivery_id for r in requests])
    read = _RECORD_READ_LOCKED if conn.dialect.name == "postgresql" else _RECORD_READ
    ids = sorted({r.delivery_id for r in requests})
    rows = {row.id: row for row in conn.execute(read, {"ids": ids})}
    results: list[Delivery | Exception | None] = [None] * len(requests)
    changes: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    health: list[tuple[str, str, datetime]] = []
    for i in first:
        request = requests[i]
        row = rows.get(request.delivery_id)
        if row is None:
            results[i] = errors.NotFound(f"no webhook delivery {request.delivery_id!r}")
            continue
        kind = _kind(request.outcome)
        excerpt = request.response_excerpt[:MAX_EXCERPT]
        status, next_at = row.status, row.next_attempt_at
        if status == _DELIVERING:
            status, next_at = _settled(kind, request.next_retry_at or request.now)
        error = None if kind == "succeeded" else _error_text(request.error_class, excerpt)
        change = {
            "status": status,
            "next_attempt_at": next_at,
            "last_status_code": request.status_code,
            "last_error": error,
            "updated_at": request.now,
        }
        changes.append({"r_id": row.id, **{f"r_{k}": v for k, v in change.items()}})
        attempts.append(_attempt_row(request, excerpt))
        endpoint = request.endpoint
        if not (kind == "succeeded" and endpoint is not None and _healthy(endpoint, request.now)):
            health.append((row.endpoint_id, kind, request.now))
        results[i] = to_value(Delivery, row, **change | {"status": DeliveryStatus(status)})
    if changes:
        conn.execute(_RECORD_MANY, changes)
        conn.execute(_INSERT_ATTEMPTS, attempts)
    for endpoint_id, kind, now in health:
        _record_health(conn, endpoint_id, kind, now)
    for i in repeats:
        request = requests[i]
        fields = {name: getattr(request, name) for name in RecordRequest.__dataclass_fields__}
        del fields["delivery_id"]
        results[i] = _attempt(record_attempt_on, conn, request.delivery_id, **fields)
    return [r for r in results if r is not None]


def _kind(outcome: str) -> str:
    return "failed" if outcome == "failed_permanent" else str(outcome)


def _attempt_row(request: RecordRequest, excerpt: str) -> dict[str, Any]:
    error_class = request.error_class
    return {
        "delivery_id": request.delivery_id,
        "attempt_no": request.attempt_no,
        "started_at": request.started_at,
        "status_code": request.status_code,
        "latency_ms": max(0, request.latency_ms),
        "error_class": None if error_class is None else error_class[:64],
        "response_excerpt": excerpt,
        "next_retry_at": request.next_retry_at,
    }
