"""Pure types and rules: tiers, priority classes, the priority order, job ids, retries.

Nothing here does I/O or reads the clock; callers pass time and randomness in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Final


class Tier(StrEnum):
    """A tenant's plan. `pro` is accepted as an alias of `growth`."""

    FREE = "free"
    STARTER = "starter"
    GROWTH = "growth"
    SCALE = "scale"
    ENTERPRISE = "enterprise"

    @classmethod
    def parse(cls, value: str) -> Tier:
        """Parse a tier name, case-insensitively; raises ValueError naming the choices."""
        name = value.strip().lower()
        if name == "pro":
            return cls.GROWTH
        try:
            return cls(name)
        except ValueError:
            choices = ", ".join(t.value for t in cls)
            raise ValueError(
                f"unknown tier {value!r}; expected one of {choices} (or pro)"
            ) from None


class PriorityClass(StrEnum):
    """How urgent a job is, independent of who asked for it."""

    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @classmethod
    def parse(cls, value: str) -> PriorityClass:
        """Parse a class name, case-insensitively; raises ValueError naming the choices."""
        try:
            return cls(value.strip().upper())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown priority {value!r}; expected one of {choices}") from None


CLASS_WEIGHT: Final[dict[PriorityClass, int]] = {
    PriorityClass.LOW: 1,
    PriorityClass.NORMAL: 5,
    PriorityClass.HIGH: 10,
    PriorityClass.CRITICAL: 20,
}
TIER_WEIGHT: Final[dict[Tier, int]] = {
    Tier.FREE: 1,
    Tier.STARTER: 2,
    Tier.GROWTH: 5,
    Tier.SCALE: 10,
}
_MAX_SHARED_IMPORTANCE: Final = max(CLASS_WEIGHT.values()) * max(TIER_WEIGHT.values())
_MAX_CLASS_WEIGHT: Final = max(CLASS_WEIGHT.values())


def importance(priority: PriorityClass, tier: Tier) -> int:
    """The seed's importance: class weight x tier weight (enterprise: class alone)."""
    if tier is Tier.ENTERPRISE:
        return CLASS_WEIGHT[priority]
    return CLASS_WEIGHT[priority] * TIER_WEIGHT[tier]


def bullmq_priority(priority: PriorityClass, tier: Tier) -> int:
    """BullMQ priority number (1 runs first): more important always means smaller.

    Shared lanes span 1..200 and the enterprise express lane 1..20; equal numbers run
    FIFO because BullMQ orders a priority level by insertion.
    """
    ceiling = _MAX_CLASS_WEIGHT if tier is Tier.ENTERPRISE else _MAX_SHARED_IMPORTANCE
    return ceiling + 1 - importance(priority, tier)


# Virtual time a job of weight 1 uses up; every importance divides it, so steps are whole.
FAIR_SCALE: Final = 200


def fair_step(priority: PriorityClass, tier: Tier) -> int:
    """Virtual time one job of this class and tier advances its flow (200 / importance).

    A flow (tenant, class) within a lane gets importance jobs per 200 units of the lane's
    virtual time, so weights share a lane in proportion; a fresh flow's first job is
    tagged one step ahead of the lane's clock (see queue/fair.py).
    """
    return FAIR_SCALE // importance(priority, tier)


def uses_express_lane(tier: Tier) -> bool:
    """Enterprise work goes to the kind's express lane, served by reserved slots."""
    return tier is Tier.ENTERPRISE


class JobState(StrEnum):
    """Where a job is in its life, as callers see it."""

    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @classmethod
    def from_bullmq(cls, state: str) -> JobState:
        """Map a BullMQ state name (prioritized and paused count as waiting)."""
        if state in ("wait", "waiting", "prioritized", "paused", "waiting-children"):
            return cls.WAITING
        try:
            return cls(state)
        except ValueError:
            return cls.UNKNOWN


# Tenant ids travel in job ids and Redis keys: keep them short and plain.
_TENANT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IDEMPOTENCY_MAX: Final = 255


def validate_tenant_id(tenant_id: str) -> str:
    """Return the tenant id if it is 1-64 of [A-Za-z0-9_.-] (not starting with a symbol)."""
    if not isinstance(tenant_id, str) or not _TENANT_RE.fullmatch(tenant_id):
        raise ValueError(
            f"invalid tenant id {tenant_id!r}: use 1-64 letters, digits, '_', '.' or '-'"
        )
    return tenant_id


def idempotent_job_id(tenant_id: str, kind: str, key: str) -> str:
    """Job id for (tenant, kind, idempotency key): hashed, so tenants never collide.

    Every id has a letter prefix and no ':' (BullMQ treats all-digit ids and ':' specially).
    """
    if not key or len(key) > _IDEMPOTENCY_MAX:
        raise ValueError(f"idempotency key must be 1-{_IDEMPOTENCY_MAX} characters")
    # JSON framing keeps the three parts apart whatever characters they hold.
    framed = json.dumps([tenant_id, kind, key], ensure_ascii=True)
    digest = hashlib.sha256(framed.encode()).digest()[:20]
    return "i" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_job_id() -> str:
    """A fresh random job id (128 random bits) that obeys BullMQ's id rules.

    Short on purpose: Redis stores each id four times per job.
    """
    return "j" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


_JOB_ID_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")


def is_valid_job_id(job_id: str) -> bool:
    """True if the id could be one we issue (used to reject hostile ids early)."""
    return bool(_JOB_ID_RE.fullmatch(job_id))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a job is retried."""

    attempts: int = 3
    base_delay_s: float = 2.0
    max_delay_s: float = 3600.0
    jitter: float = 0.5
    """Fraction of each delay that is randomised (0 = none, 1 = full jitter)."""

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 100:
            raise ValueError("attempts must be between 1 and 100")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")


def retry_delay_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Delay before the attempt after `attempt` (1-based): exponential, capped, jittered.

    The jittered part is drawn uniformly from [0, jitter x delay) and subtracted, so the
    delay never exceeds the exponential curve and retries of many jobs spread out.
    """
    raw = min(policy.base_delay_s * 2.0 ** (attempt - 1), policy.max_delay_s)
    return float(raw - rng.random() * policy.jitter * raw)


def failure_reason(error: BaseException) -> str:
    """`Type: message`, the form failures are stored and shown in."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def retry_after_s(
    error: BaseException, attempt: int, max_attempts: int, policy: RetryPolicy, rng: random.Random
) -> float | None:
    """Seconds to wait before retrying after `error` on `attempt`, or None to give up now.

    Permanent failures never retry; `RetryLater` chooses its own delay
    (capped by the policy); everything else backs off exponentially with jitter.
    """
    from settler_jobs.errors import PermanentFailure, RetryLater

    if isinstance(error, PermanentFailure) or attempt >= max_attempts:
        return None
    if isinstance(error, RetryLater):
        return min(max(error.delay_s, 0.0), policy.max_delay_s)
    return retry_delay_s(policy, attempt, rng)


class DlqStatus(StrEnum):
    """Where a DLQ entry is: waiting for an operator, or dealt with."""

    OPEN = "open"
    RESOLVED = "resolved"
    RETRIED = "retried"


_DELTA_SECONDS_RE: Final = re.compile(r"^[+-]?\d{1,12}(?:\.\d{1,6})?$")


def parse_retry_after(value: str | None, *, now: datetime, cap_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    Negative values and past dates give 0; values above `cap_s` give `cap_s`; anything
    unparseable (or no header) gives None.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS_RE.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC without saying so
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), cap_s)
