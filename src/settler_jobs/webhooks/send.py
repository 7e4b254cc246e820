"""Send one attempt of one webhook delivery: the use case behind the delivery job.

Three short steps, the HTTP request outside any database transaction:

1. `begin_attempt` (committed): the delivery becomes delivering, attempts + 1; anything
   else (final, cancelled, another generation, its endpoint deleted) is skipped;
2. sign and POST the Standard Webhooks message: ``webhook-id`` is the delivery id, the
   same on every retry; timestamp and signature are fresh per attempt;
3. `record_attempt` plus `disable_if_unhealthy` (committed) from the classified result.

Steps 1 and 3 are group commits (`Transactions.grouped`): the attempts that concurrent
jobs of this process begin (or record) at the same moment share one transaction, and
each job goes on only once that transaction has committed.

Signing secrets live only in local variables here: never in results, errors or logs.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.domain import RetryPolicy
from settler_jobs.guarded_http import GuardedHttp1
from settler_jobs.secrets_box import SecretBox
from settler_jobs.storage.db import Transactions
from settler_jobs.webhooks.attempt import AttemptResult, Outcome, attempt, next_delay_s
from settler_jobs.webhooks.endpoints import disable_if_unhealthy, open_secrets
from settler_jobs.webhooks.log_batches import (
    BeginRequest,
    RecordRequest,
    begin_attempts_on,
    record_attempts_on,
)
from settler_jobs.webhooks.signing import DEFAULT_USER_AGENT, json_body, sign_headers
from settler_jobs.webhooks.values import Delivery, DeliveryStatus, Endpoint, Event, Notification

log = logging.getLogger(__name__)

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class SendConfig:
    """Limits of one send: the whole-attempt deadline and when an endpoint is disabled."""

    deadline_s: float = 15.0
    max_consecutive_failures: int = 20
    max_failing: timedelta = timedelta(days=5)
    user_agent: str = DEFAULT_USER_AGENT


@dataclass(frozen=True)
class SendResult:
    """What one send did; `final` means no further attempt of this job is due.

    `outcome` is the recorded one (succeeded, retry, gone or failed), None when skipped;
    `retry_in_s` is the wait before the next attempt, set only when not final.
    """

    outcome: str | None
    status_code: int | None = None
    retry_in_s: float | None = None
    final: bool = True
    notification: Notification | None = None
    skipped: bool = False
    reason: str | None = None
    error_class: str | None = None
    endpoint_id: str | None = None


@dataclass(frozen=True)
class _Started:
    delivery: Delivery
    endpoint: Endpoint
    event: Event
    started_at: datetime
    secrets: Sequence[str] = field(repr=False)


async def send_delivery(
    delivery_id: str,
    *,
    generation: int | None,
    is_last: bool,
    sessions: Sessions,
    transactions: Transactions,
    box: SecretBox,
    client: GuardedHttp1,
    policy: RetryPolicy,
    config: SendConfig,
    rng: random.Random,
    now: Callable[[], datetime],
) -> SendResult:
    """Send one attempt of `delivery_id` (of `generation`, when given) and record it.

    `is_last`: no attempt follows this one, so a retryable failure fails the delivery.
    Returns a skipped result when there is nothing to send.
    """
    started = await _start(transactions, box, delivery_id, generation, now)
    if isinstance(started, SendResult):
        return started
    secrets = started.secrets
    body = _body(started.event)
    headers = sign_headers(
        webhook_id=started.delivery.id,
        timestamp=now(),
        body=body,
        secrets=secrets,
        user_agent=config.user_agent,
    )
    del secrets
    result = await attempt(
        client, url=started.endpoint.url, headers=headers, body=body, deadline_s=config.deadline_s
    )
    attempt_no = started.delivery.attempts
    kind, retry_in_s = _decide(result, attempt_no, is_last, policy, rng)
    return await _record(sessions, transactions, started, result, kind, retry_in_s, config, now)


async def _start(
    transactions: Transactions,
    box: SecretBox,
    delivery_id: str,
    generation: int | None,
    now: Callable[[], datetime],
) -> _Started | SendResult:
    started_at = now()
    try:
        started = await transactions.grouped(begin_attempts_on).submit(
            BeginRequest(delivery_id, started_at, generation)
        )
    except errors.NotFound:
        return SendResult(None, skipped=True, reason="delivery not found")
    delivery = started.delivery
    if delivery.status is not DeliveryStatus.DELIVERING:
        reason = f"delivery is {delivery.status.value} (generation {delivery.generation})"
        return SendResult(None, skipped=True, reason=reason)
    secrets = open_secrets(box, started.endpoint.id, started.sealed, now=started_at)
    return _Started(delivery, started.endpoint, started.event, started_at, secrets)


def _body(event: Event) -> bytes:
    """The Standard Webhooks payload: ``{"type", "timestamp", "data"}``."""
    timestamp = event.created_at.isoformat().replace("+00:00", "Z")
    return json_body({"type": event.event_type, "timestamp": timestamp, "data": event.payload})


def _decide(
    result: AttemptResult, attempt_no: int, is_last: bool, policy: RetryPolicy, rng: random.Random
) -> tuple[str, float | None]:
    """The outcome to record and, for a retry, the seconds to wait first."""
    if result.outcome is Outcome.SUCCEEDED:
        return "succeeded", None
    if result.outcome is Outcome.GONE:
        return "gone", None
    if result.outcome is Outcome.FAILED_PERMANENT or is_last:
        return "failed", None
    return "retry", next_delay_s(result, attempt_no, policy, rng)


async def _record(
    sessions: Sessions,
    transactions: Transactions,
    started: _Started,
    result: AttemptResult,
    kind: str,
    retry_in_s: float | None,
    config: SendConfig,
    now: Callable[[], datetime],
) -> SendResult:
    finished = now()
    retry_at = None if retry_in_s is None else finished + timedelta(seconds=retry_in_s)
    try:
        recording = RecordRequest(
            started.delivery.id,
            attempt_no=started.delivery.attempts,
            started_at=started.started_at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error_class=result.error_class,
            response_excerpt=result.response_excerpt,
            next_retry_at=retry_at,
            outcome=kind,
            now=finished,
            endpoint=started.endpoint,
        )
        delivery = await transactions.grouped(record_attempts_on).submit(recording)
        notification = None
        if kind != "succeeded":  # the rare path: the ORM and its own transaction
            async with sessions() as session, session.begin():
                notification = await disable_if_unhealthy(
                    session,
                    started.endpoint.id,
                    now=finished,
                    max_consecutive=config.max_consecutive_failures,
                    max_failing=config.max_failing,
                )
    except errors.NotFound:  # the endpoint, and so the delivery, was deleted meanwhile
        return SendResult(
            kind, result.status_code, reason="delivery deleted while sending", skipped=True
        )
    # Cancelled or redelivered meanwhile: this job's work is over whatever happened.
    final = kind != "retry" or not _still_ours(delivery, started.delivery)
    log.info(
        "webhook delivery %s attempt %d: %s (status %s)",
        delivery.id,
        started.delivery.attempts,
        kind,
        result.status_code,
    )
    return SendResult(
        kind,
        result.status_code,
        None if final else retry_in_s,
        final,
        notification,
        error_class=result.error_class,
        endpoint_id=started.endpoint.id,
    )


def _still_ours(now: Delivery, then: Delivery) -> bool:
    return now.status is DeliveryStatus.PENDING and now.generation == then.generation
