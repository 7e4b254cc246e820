"""Webhooks: endpoints, signed events, deliveries with retries and the delivery log.

`Webhooks` is the tenant-scoped API; `signing` holds the Standard Webhooks signature
that alerts reuse. The job handlers live in `job` (the registry imports them).
"""

from __future__ import annotations

from settler_jobs.webhooks.service import Webhooks
from settler_jobs.webhooks.signing import DEFAULT_USER_AGENT, json_body, sign_headers
from settler_jobs.webhooks.values import (
    UNCHANGED,
    Attempt,
    Delivery,
    DeliveryStatus,
    Endpoint,
    Event,
    Notification,
)

__all__ = [
    "DEFAULT_USER_AGENT",
    "UNCHANGED",
    "Attempt",
    "Delivery",
    "DeliveryStatus",
    "Endpoint",
    "Event",
    "Notification",
    "Webhooks",
    "json_body",
    "sign_headers",
]
