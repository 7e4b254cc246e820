"""The webhook delivery log over an `AsyncSession` (never committing), worker side: begin and
record attempts, and count each outcome towards its endpoint's health.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import Table, bindparam, case, func, insert, literal, null, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs import errors
from settler_jobs.storage.tables import UTCDateTime
from settler_jobs.storage.webhook_tables import (
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)
from settler_jobs.webhooks.values import (
    ACTIVE,
    GONE_REASON,
    MAX_ERROR,
    MAX_EXCERPT,
    OUTCOMES,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    SealedSecrets,
    to_value,
)

_DT: Final = cast(Table, WebhookDeliveryRow.__table__)
_ET: Final = cast(Table, WebhookEndpointRow.__table__)
_VT: Final = cast(Table, WebhookEventRow.__table__)
_AT: Final = cast(Table, WebhookAttemptRow.__table__)
SUCCESS_REFRESH: Final = timedelta(seconds=60)
"""How stale `last_success_at` may be on an endpoint that keeps succeeding."""


@dataclass(frozen=True)
class Started:
    """An attempt's delivery, endpoint and event, plus the endpoint's sealed secrets."""

    delivery: Delivery
    endpoint: Endpoint
    event: Event
    sealed: SealedSecrets


def _prefixed(prefix: str, table: Any) -> list[Any]:
    return [column.label(f"{prefix}{column.name}") for column in table.c]


def _value(cls: type[Any], row: Any, prefix: str, **overrides: Any) -> Any:
    mapping = row._mapping
    names = cls.__dataclass_fields__
    fields = {n: mapping[f"{prefix}{n}"] for n in names if n not in overrides}
    return cls(**fields, **overrides)


async def begin_attempt(
    session: AsyncSession, delivery_id: str, *, now: datetime, generation: int | None = None
) -> Started:
    """`begin_attempt_on` in the session's transaction."""
    conn = await session.connection()
    return await conn.run_sync(begin_attempt_on, delivery_id, now=now, generation=generation)


def begin_attempt_on(
    conn: Connection, delivery_id: str, *, now: datetime, generation: int | None = None
) -> Started:
    """Begin an attempt; send only if the returned delivery is DELIVERING.

    An active delivery (of `generation`, when given) becomes delivering with attempts+1,
    or failed if its endpoint is disabled. A final, cancelled or other-generation one is
    returned unchanged. NotFound if the delivery is gone (its endpoint was deleted).
    Two statements: the joined rows (the delivery locked), then the update.
    """
    rows = _joined_rows(conn, [delivery_id])
    if delivery_id not in rows:
        raise errors.NotFound(f"no webhook delivery {delivery_id!r}")
    return _begin_row(conn, rows[delivery_id], now=now, generation=generation)


_JOINED: Final = (
    select(*_prefixed("d_", _DT), *_prefixed("e_", _ET), *_prefixed("v_", _VT))
    .join_from(_DT, _ET, _ET.c.id == _DT.c.endpoint_id)
    .join(_VT, _VT.c.id == _DT.c.event_id)
    .where(_DT.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DT.c.id)
)
# Built once: a statement object keeps its cache key, so a run only binds the ids.
_JOINED_LOCKED: Final = _JOINED.with_for_update(of=_DT)


def _joined_rows(conn: Connection, delivery_ids: Sequence[str]) -> dict[str, Any]:
    """Delivery, endpoint and event of each id, by delivery id (deliveries locked on PG)."""
    # Core statements, synchronous: the hot path runs as one unit per transaction (see
    # storage.db.Transactions), not one event-loop hop per statement.
    joined = _JOINED_LOCKED if conn.dialect.name == "postgresql" else _JOINED
    return {row.d_id: row for row in conn.execute(joined, {"ids": list(delivery_ids)})}


def _begin_row(
    conn: Connection, row: Any, *, now: datetime, generation: int | None, write: bool = True
) -> Started:
    """The attempt `row` (joined) begins; `write=False`: the caller writes the change."""
    delivery_id = row.d_id
    event = _value(Event, row, "v_", payload=copy.deepcopy(row.v_payload))
    types = row.e_event_types
    endpoint = _value(Endpoint, row, "e_", event_types=None if types is None else tuple(types))
    changes: dict[str, Any] = {}
    if row.d_status in ACTIVE and generation in (None, row.d_generation):
        if endpoint.enabled:
            changes = {"status": DeliveryStatus.DELIVERING.value, "attempts": row.d_attempts + 1}
        else:
            reason = f"endpoint disabled: {endpoint.disabled_reason}"[:MAX_ERROR]
            changes = {"status": DeliveryStatus.FAILED.value, "last_error": reason}
        changes |= {"next_attempt_at": None, "updated_at": now}
        if write:
            still = _DT.c.status == row.d_status, _DT.c.generation == row.d_generation
            moved = conn.execute(update(_DT).where(_DT.c.id == delivery_id, *still).values(changes))
            if moved.rowcount != 1:  # another process changed it since our read: send nothing
                raise errors.InvalidState(
                    f"webhook delivery {delivery_id!r} changed while starting"
                )
    delivery = _value(
        Delivery, row, "d_", status=DeliveryStatus(changes.get("status", row.d_status))
    )
    if changes:
        delivery = replace(delivery, **{k: v for k, v in changes.items() if k != "status"})
    sealed = SealedSecrets(
        row.e_secret_ciphertext, row.e_previous_secret_ciphertext, row.e_previous_secret_expires_at
    )
    return Started(delivery, endpoint, event, sealed)


async def start_attempt(
    session: AsyncSession, delivery_id: str, *, now: datetime, generation: int | None = None
) -> tuple[Delivery, Endpoint, Event]:
    """`begin_attempt` without the sealed secrets."""
    started = await begin_attempt(session, delivery_id, now=now, generation=generation)
    return started.delivery, started.endpoint, started.event


async def record_attempt(session: AsyncSession, delivery_id: str, **kwargs: Any) -> Delivery:
    """`record_attempt_on` (same keywords) in the session's transaction."""
    conn = await session.connection()
    return await conn.run_sync(record_attempt_on, delivery_id, **kwargs)


def record_attempt_on(
    conn: Connection,
    delivery_id: str,
    *,
    attempt_no: int,
    started_at: datetime,
    status_code: int | None,
    latency_ms: int,
    error_class: str | None,
    response_excerpt: str,
    next_retry_at: datetime | None,
    outcome: str,
    now: datetime,
    endpoint: Endpoint | None = None,
) -> Delivery:
    """Log an attempt and apply its `outcome` (succeeded, retry, gone or failed).

    A delivering delivery becomes succeeded, pending until `next_retry_at` (retry) or
    failed (gone, failed); one cancelled or redelivered meanwhile keeps its status. The
    endpoint's health follows: success resets it, a retry starts its failing period, a
    failed delivery (failed, gone) counts one more consecutive failure, and "gone"
    disables the endpoint (GONE_REASON). The excerpt is cut to 1024 characters.
    Given `endpoint` as read when the attempt began, a success that would change none
    of its health fields skips that write (two statements instead of three).
    """
    kind = "failed" if outcome == "failed_permanent" else str(outcome)
    if kind not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
    excerpt = response_excerpt[:MAX_EXCERPT]
    status, next_at = _settled(kind, next_retry_at or now)
    delivering = _DT.c.status == DeliveryStatus.DELIVERING.value
    stmt = (
        update(_DT)
        .where(_DT.c.id == delivery_id)
        .values(
            status=case((delivering, status), else_=_DT.c.status),
            next_attempt_at=case((delivering, _at(next_at)), else_=_DT.c.next_attempt_at),
            last_status_code=status_code,
            last_error=None if kind == "succeeded" else _error_text(error_class, excerpt),
            updated_at=now,
        )
        .returning(*_DT.c)
    )
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise errors.NotFound(f"no webhook delivery {delivery_id!r}")
    conn.execute(
        insert(_AT).values(
            delivery_id=delivery_id,
            attempt_no=attempt_no,
            started_at=started_at,
            status_code=status_code,
            latency_ms=max(0, latency_ms),
            error_class=None if error_class is None else error_class[:64],
            response_excerpt=excerpt,
            next_retry_at=next_retry_at,
        )
    )
    if not (kind == "succeeded" and endpoint is not None and _healthy(endpoint, now)):
        _record_health(conn, row.endpoint_id, kind, now)
    return to_value(Delivery, row, status=DeliveryStatus(row.status))


def _settled(kind: str, retry_at: datetime) -> tuple[str, datetime | None]:
    """The status (and next attempt time) a delivering delivery takes after `kind`."""
    if kind == "retry":
        return DeliveryStatus.PENDING.value, retry_at
    ok = kind == "succeeded"
    return (DeliveryStatus.SUCCEEDED if ok else DeliveryStatus.FAILED).value, None


def _at(moment: datetime | None) -> Any:
    return literal(moment, UTCDateTime()) if moment is not None else null()


def _error_text(error_class: str | None, excerpt: str) -> str:
    text = f"{error_class or 'error'}: {excerpt}" if excerpt else error_class or "error"
    return text[:MAX_ERROR]


def _healthy(endpoint: Endpoint, now: datetime) -> bool:
    """True if a success now leaves the endpoint's health fields as they are."""
    last = endpoint.last_success_at
    return (
        endpoint.consecutive_failures == 0
        and endpoint.failing_since is None
        and last is not None
        and last >= now - SUCCESS_REFRESH
    )


def _record_health(conn: Connection, endpoint_id: str, kind: str, now: datetime) -> None:
    at = literal(now, UTCDateTime())
    stmt = update(_ET).where(_ET.c.id == endpoint_id)
    if kind == "succeeded":
        # A healthy endpoint's row is written at most once per interval, not per delivery:
        # every delivery to one busy endpoint would otherwise queue on its row lock.
        stale = literal(now - SUCCESS_REFRESH, UTCDateTime())
        changed = or_(
            _ET.c.consecutive_failures != 0,
            _ET.c.failing_since.is_not(None),
            _ET.c.last_success_at.is_(None),
            _ET.c.last_success_at < stale,
        )
        values: dict[str, Any] = {
            "consecutive_failures": 0,
            "last_success_at": at,
            "failing_since": None,
        }
        conn.execute(stmt.where(changed).values(values))
        return
    # A retry is not yet a failed delivery: it starts the failing period but only a
    # delivery that failed for good counts towards the consecutive limit.
    values = {"failing_since": func.coalesce(_ET.c.failing_since, at)}
    if kind != "retry":
        values["consecutive_failures"] = _ET.c.consecutive_failures + 1
    conn.execute(stmt.values(values))
    if kind == "gone":
        gone = {"enabled": False, "disabled_reason": GONE_REASON, "disabled_at": at}
        disable = update(_ET).where(_ET.c.id == endpoint_id, _ET.c.enabled.is_(True))
        conn.execute(disable.values(gone | {"updated_at": at}))
