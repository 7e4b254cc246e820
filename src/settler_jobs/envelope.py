"""The job data envelope: the seed's flat shape, shared with BullMQ producers in Node.

A job's data is one JSON object: the payload's own fields plus reserved keys that say
who asked (`tenantId`, `tenantTier`), which job it is (`jobId`) and how it was
classed (`priorityClass`, optional `timeoutMs`). A Node producer that writes
`{tenantId, tenantTier, jobId, ...}` into a kind's queue is run by our workers as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from settler_jobs.domain import PriorityClass, Tier, validate_tenant_id
from settler_jobs.errors import InvalidJob, PayloadTooLarge, PermanentFailure

_MAX_TIMEOUT_MS: Final = 86_400_000
RESERVED_KEYS: Final = frozenset({"tenantId", "tenantTier", "jobId", "priorityClass", "timeoutMs"})
NUL_ESCAPE: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
"""An escaped NUL (U+0000) in JSON text, not a literal backslash followed by "u0000"."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A job's data, split into who/what (reserved keys) and the handler's payload."""

    tenant_id: str
    tier: Tier
    job_id: str | None
    priority: PriorityClass | None
    timeout_s: float | None
    payload: dict[str, Any]


def build(
    payload: Mapping[str, Any],
    *,
    tenant_id: str,
    tier: Tier,
    job_id: str,
    priority: PriorityClass,
    timeout_s: float | None,
) -> dict[str, Any]:
    """The job data for a submission; refuses payloads that set reserved keys."""
    clash = sorted(RESERVED_KEYS.intersection(payload))
    if clash:
        raise InvalidJob(
            f"job data may not set {', '.join(clash)}: the tenant, tier and job id come "
            "from the caller"
        )
    data: dict[str, Any] = {
        "tenantId": tenant_id,
        "tenantTier": tier.value,
        "jobId": job_id,
        "priorityClass": priority.value,
        **payload,
    }
    if timeout_s is not None:
        data["timeoutMs"] = round(timeout_s * 1000)
    return data


def encoded_size(data: Mapping[str, Any], limit: int) -> int:
    """Size of the data as stored (compact UTF-8 JSON); PayloadTooLarge above `limit`."""
    try:
        # NaN and Infinity are not JSON: a Node consumer could not parse the job.
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidJob(f"job data is not JSON-serialisable: {exc}") from None
    if size > limit:
        raise PayloadTooLarge(size, limit)
    if "\\u0000" in text and NUL_ESCAPE.search(text):
        # PostgreSQL's json and text types cannot hold U+0000: refused on every backend,
        # so a job accepted on one is accepted on the other.
        raise InvalidJob("job data must not contain NUL characters (U+0000)")
    return size


def parse(data: Any) -> Envelope:
    """Read a job's data as stored; PermanentFailure if it cannot be run safely."""
    return Envelope(*read(data))


Parts = tuple[str, Tier, "str | None", "PriorityClass | None", "float | None", dict[str, Any]]
"""`Envelope`'s fields in order: what `read` returns."""


def read(data: Any) -> Parts:
    """`parse` without building the `Envelope` (the worker's per-job path): the same
    checks and errors, with exact tenant ids, tiers and priorities found by lookup."""
    if not isinstance(data, dict):
        raise PermanentFailure("job data must be a JSON object")
    try:
        tenant_id = data.get("tenantId")
        if not (isinstance(tenant_id, str) and tenant_id in _valid_tenants):
            tenant_id = _remember(validate_tenant_id(tenant_id))  # type: ignore[arg-type]
        raw_tier = data.get("tenantTier")
        tier = _TIERS.get(raw_tier) if isinstance(raw_tier, str) else None
        tier = tier or Tier.parse(str(raw_tier or ""))
        raw_priority = data.get("priorityClass")
        priority = None
        if raw_priority is not None:
            if isinstance(raw_priority, str):
                priority = _PRIORITIES.get(raw_priority)
            priority = priority or PriorityClass.parse(str(raw_priority))
    except ValueError as exc:
        raise PermanentFailure(f"job data envelope is invalid: {exc}") from None
    job_id = data.get("jobId")
    timeout_ms = data.get("timeoutMs")
    if timeout_ms is not None and not (
        isinstance(timeout_ms, int) and 0 < timeout_ms <= _MAX_TIMEOUT_MS
    ):
        raise PermanentFailure(f"timeoutMs must be an integer in 1..{_MAX_TIMEOUT_MS}")
    return (
        tenant_id,
        tier,
        str(job_id) if job_id is not None else None,
        priority,
        timeout_ms / 1000 if timeout_ms else None,
        {k: v for k, v in data.items() if k not in RESERVED_KEYS},
    )


def tenant_of(data: Any) -> str | None:
    """The tenant id stored in job data, if any (no validation)."""
    if isinstance(data, dict):
        value = data.get("tenantId")
        return value if isinstance(value, str) else None
    return None


_TIERS: Final = {t.value: t for t in Tier}
"""Exact tier names: the fast path of a per-job parse (other spellings go to Tier.parse)."""
_PRIORITIES: Final = {p.value: p for p in PriorityClass}
"""Exact priority names, likewise (other spellings go to PriorityClass.parse)."""
_VALID_TENANTS_MAX: Final = 10_000
_valid_tenants: set[str] = set()
"""Tenant ids that passed `validate_tenant_id` (a set: a hit is a plain string)."""


def _remember(tenant_id: str) -> str:
    if len(_valid_tenants) >= _VALID_TENANTS_MAX:
        _valid_tenants.clear()
    _valid_tenants.add(tenant_id)
    return tenant_id
