"""One webhook delivery attempt and how it is classified (no database, no queue).

`attempt` POSTs once, never follows redirects, keeps at most `excerpt_bytes` of the
response and is bounded as a whole by `deadline_s`; network failures become results:

* 2xx SUCCEEDED; 410 GONE; 3xx RETRY ``redirect``; other 4xx/5xx RETRY ``http_4xx`` /
  ``http_5xx`` (429 and 503 with ``Retry-After`` as `retry_after_s`);
* timeouts, a trickling body included, RETRY ``timeout``; connection failures RETRY
  ``connect`` / ``tls`` / ``protocol`` / ``network``;
* a `SettlerError` from the client (the SSRF guard) FAILED_PERMANENT ``refused``, its
  message as the excerpt; a URL that is not http(s) ``invalid_url``.

`next_delay_s` turns a RETRY result into the wait before the next attempt.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, TypeVar

from settler_jobs.domain import RetryPolicy, parse_retry_after, retry_delay_s
from settler_jobs.errors import SettlerError
from settler_jobs.guarded_http import (
    ConnectFailed,
    Exchange,
    GuardedHttp1,
    InvalidUrl,
    ProtocolFailure,
)
from settler_jobs.http1_wire import HttpFailure

DEFAULT_EXCERPT_BYTES: Final = 1024
DEFAULT_RETRY_AFTER_CAP_S: Final = 3600.0
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
_HANDLED_ERRORS: Final = (HttpFailure, SettlerError, OSError)

_E = TypeVar("_E", bound=BaseException)


class Outcome(StrEnum):
    """What the delivery should do next."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    GONE = "gone"
    FAILED_PERMANENT = "failed_permanent"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The classified result of one attempt.

    `status_code` is the response status if one arrived (also when the body then timed
    out); `response_excerpt` holds the first bytes of the body read, decoded with
    replacement characters (for ``refused``, the refusal message).
    """

    outcome: Outcome
    status_code: int | None
    latency_ms: int
    error_class: str | None
    response_excerpt: str
    retry_after_s: float | None = None


def _result(
    exchange: Exchange,
    started: float,
    outcome: Outcome,
    error_class: str | None,
    *,
    retry_after_s: float | None = None,
) -> AttemptResult:
    return AttemptResult(
        outcome=outcome,
        status_code=exchange.status_code,
        latency_ms=round((time.monotonic() - started) * 1000),
        error_class=error_class,
        response_excerpt=exchange.body.decode("utf-8", errors="replace"),
        retry_after_s=retry_after_s,
    )


async def attempt(
    client: GuardedHttp1,
    *,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    deadline_s: float,
    excerpt_bytes: int = DEFAULT_EXCERPT_BYTES,
    retry_after_cap_s: float = DEFAULT_RETRY_AFTER_CAP_S,
) -> AttemptResult:
    """POST `body` to `url` once and classify the outcome (see the module docstring).

    Connect, send, response headers and excerpt all end within `deadline_s`. At most
    `excerpt_bytes` of the body are kept; a longer body is drained if short, else its
    connection is closed. Raises only for bad arguments and bugs.
    """
    if not deadline_s > 0 or excerpt_bytes < 0 or not retry_after_cap_s >= 0:
        raise ValueError("need deadline_s > 0, excerpt_bytes >= 0 and retry_after_cap_s >= 0")
    started = time.monotonic()
    exchange = Exchange()  # what arrived stays here when the deadline cuts the exchange
    try:
        async with asyncio.timeout(deadline_s):
            await client.post(url, headers, body, into=exchange, limit=excerpt_bytes)
    except TimeoutError:
        return _result(exchange, started, Outcome.RETRY, "timeout")
    except _HANDLED_ERRORS as exc:
        outcome, error_class = classify_error(exc)
        if error_class == "refused":
            refusal = _find_in_chain(exc, SettlerError)
            exchange.body[:] = str(refusal).encode()[:excerpt_bytes]
        return _result(exchange, started, outcome, error_class)
    return _classify_response(exchange, started, retry_after_cap_s)


def _classify_response(
    exchange: Exchange, started: float, retry_after_cap_s: float
) -> AttemptResult:
    status = exchange.status_code
    if status is None:  # cannot happen: set as soon as the response headers arrive
        raise RuntimeError("the exchange ended without a response status")
    outcome, error_class = classify_status(status)
    retry_after = None
    if status in _RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(
            exchange.headers.get("retry-after"), now=datetime.now(UTC), cap_s=retry_after_cap_s
        )
    return _result(exchange, started, outcome, error_class, retry_after_s=retry_after)


def classify_status(status: int) -> tuple[Outcome, str | None]:
    """Outcome and error class of a response status (redirects are never followed)."""
    if 200 <= status < 300:
        return Outcome.SUCCEEDED, None
    if status == 410:
        return Outcome.GONE, "http_4xx"
    if 300 <= status < 400:
        return Outcome.RETRY, "redirect"
    if 400 <= status < 500:
        return Outcome.RETRY, "http_4xx"
    if 500 <= status < 600:
        return Outcome.RETRY, "http_5xx"
    return Outcome.RETRY, "http_other"


_PASSING_RULES = frozenset({"unresolvable", "no-addresses"})


def classify_error(exc: BaseException) -> tuple[Outcome, str]:
    """Outcome and error class of an exception raised while sending or receiving."""
    refused = _find_in_chain(exc, SettlerError)
    if refused is not None:
        # A name that does not resolve now may resolve later: that is not a refusal.
        if getattr(refused, "rule", None) in _PASSING_RULES:
            return Outcome.RETRY, "dns"
        return Outcome.FAILED_PERMANENT, "refused"
    if isinstance(exc, InvalidUrl):
        return Outcome.FAILED_PERMANENT, "invalid_url"
    if _find_in_chain(exc, ssl.SSLError) is not None:
        return Outcome.RETRY, "tls"
    if isinstance(exc, TimeoutError):
        return Outcome.RETRY, "timeout"
    if isinstance(exc, ConnectFailed | ConnectionRefusedError):
        return Outcome.RETRY, "connect"
    if isinstance(exc, ProtocolFailure):
        return Outcome.RETRY, "protocol"
    return Outcome.RETRY, "network"


def _find_in_chain(exc: BaseException, kind: type[_E]) -> _E | None:
    """`exc` or the first of its causes / contexts that is a `kind`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def next_delay_s(
    result: AttemptResult, attempt: int, policy: RetryPolicy, rng: random.Random
) -> float:
    """Seconds before retrying after `result`, the `attempt`-th (1-based) attempt.

    The receiver's Retry-After when it sent one (capped by ``policy.max_delay_s``), else
    exponential backoff with jitter (`domain.retry_delay_s`). Whether attempts remain is
    the caller's decision. Raises ValueError for results that are not RETRY.
    """
    if result.outcome is not Outcome.RETRY:
        raise ValueError(f"no retry follows a {result.outcome.value} attempt")
    if result.retry_after_s is not None:
        return min(max(result.retry_after_s, 0.0), policy.max_delay_s)
    return retry_delay_s(policy, attempt, rng)
