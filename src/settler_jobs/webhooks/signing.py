"""Standard Webhooks signing: the exact body bytes and the headers that go with them.

Receivers verify with any Standard Webhooks library (``Webhook(secret).verify(body,
headers)``). The signature covers ``<webhook-id>.<webhook-timestamp>.<body>``; keep the
same `webhook_id` for every retry of one message so receivers can deduplicate.

During secret rotation pass both secrets (new first): the ``webhook-signature`` header
then carries one ``v1,<signature>`` entry per secret and receivers holding either verify.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from standardwebhooks import Webhook

from settler_jobs.secrets_box import (
    WEBHOOK_SECRET_MAX_BYTES,
    WEBHOOK_SECRET_MIN_BYTES,
    WEBHOOK_SECRET_PREFIX,
)

DEFAULT_USER_AGENT: Final = "Settler-Webhooks/1.0"
MAX_SECRETS: Final = 5

# No '.', which separates the signed fields; no characters that need quoting in headers.
_WEBHOOK_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_B64_RE: Final = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_USER_AGENT_RE: Final = re.compile(r"^[\x20-\x7e]{1,256}$")
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_body(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON for a webhook body; NaN/Infinity are refused (ValueError).

    Nested values must be JSON types (dict, list, str, int, float, bool, None).
    """
    text = _JSON.encode(dict(payload))
    return text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret, decoded strictly.

    Raises ValueError (never showing the secret) unless the base64 is well-formed and
    holds 24-64 bytes. The prefix is optional, as in Standard Webhooks.
    """
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX) if isinstance(secret, str) else ""
    unpadded = encoded.rstrip("=")
    if not _B64_RE.fullmatch(encoded) or len(unpadded) % 4 == 1:
        raise ValueError("a webhook secret must be 'whsec_' followed by base64")
    try:
        key = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None
    if not WEBHOOK_SECRET_MIN_BYTES <= len(key) <= WEBHOOK_SECRET_MAX_BYTES:
        raise ValueError(
            f"a webhook secret must hold {WEBHOOK_SECRET_MIN_BYTES}-"
            f"{WEBHOOK_SECRET_MAX_BYTES} bytes"
        )
    return key


def unix_seconds(timestamp: datetime) -> int:
    """Whole unix seconds of an aware datetime (naive datetimes are refused)."""
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError("the webhook timestamp must be timezone-aware")
    return math.floor(timestamp.timestamp())


def sign_headers(
    *,
    webhook_id: str,
    timestamp: datetime,
    body: bytes,
    secrets: Sequence[str],
    user_agent: str,
) -> dict[str, str]:
    """Headers for sending `body` (the exact bytes on the wire) as Standard Webhooks.

    Returns ``webhook-id``, ``webhook-timestamp`` (unix seconds), ``webhook-signature``
    (space-separated ``v1,<base64>``, one per secret, in order), ``content-type`` and
    ``user-agent``. Deterministic: equal inputs give equal headers. Raises ValueError for
    a malformed id, naive timestamp, non-UTF-8 body, bad or missing secrets.
    """
    if not isinstance(webhook_id, str) or not _WEBHOOK_ID_RE.fullmatch(webhook_id):
        raise ValueError("webhook_id must be 1-256 of [A-Za-z0-9_-]")
    if not isinstance(user_agent, str) or not _USER_AGENT_RE.fullmatch(user_agent):
        raise ValueError("user_agent must be 1-256 printable ASCII characters")
    if isinstance(secrets, str) or not 1 <= len(secrets) <= MAX_SECRETS:
        raise ValueError(f"pass a sequence of 1-{MAX_SECRETS} secrets")
    seconds = unix_seconds(timestamp)
    try:
        # standardwebhooks signs text; strict UTF-8 round-trips to exactly these bytes.
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the webhook body must be UTF-8") from None
    # The library replaces (does not convert) the time zone, so hand it UTC.
    signed_at = datetime.fromtimestamp(seconds, tz=UTC)
    signatures = [
        Webhook(secret_key(secret)).sign(webhook_id, signed_at, text) for secret in secrets
    ]
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": user_agent,
    }
