"""Redaction of secrets in JSON-like data before it is stored or logged.

`redact(value)` returns a deep copy in which

* the value of every *secret-looking key* becomes ``"[REDACTED]"`` (``None`` and ``""``
  are kept: an absent secret hides nothing and helps diagnose the failure);
* credentials inside strings are masked wherever they appear: webhook secrets
  (``whsec_...``), bearer tokens (``Bearer <8+ token characters>``), Stripe-style secret keys
  (``sk_live_...``, ``sk_test_...``, ``rk_...``) and the password of URLs of the form
  ``scheme://user:password@host``;
* containers nested deeper than `MAX_DEPTH` become ``"[TRUNCATED]"`` (this also ends
  self-referencing structures).

A key is secret-looking when its *normalised* form (lower-cased, every character that
is not a letter or digit removed, so ``api_key``, ``API-Key`` and ``apiKey`` all read
``apikey``) is not in `ALLOWED_KEYS` and either contains one of `SECRET_WORDS`, contains
``auth`` without being about an ``author`` (``authorization`` still counts), or ends in
``key``. Identifiers such as ``tenantId``, ``jobId`` or ``idempotencyKey`` are kept.
Over-redacting an innocent field is accepted; leaking a credential is not.

The result is always JSON-serialisable: tuples become lists, keys become strings and
values of other types become their (masked) ``str()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

REDACTED: Final = "[REDACTED]"
TRUNCATED: Final = "[TRUNCATED]"
MAX_DEPTH: Final = 32

SECRET_WORDS: Final = (
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "signature",
    "cookie",
    "session",
)
ALLOWED_KEYS: Final = frozenset(
    {
        "idempotencykey",
        "cachekey",
        "cachekeys",
        "dedupkey",
        "deduplicationkey",
        "sortkey",
        "partitionkey",
        "groupkey",
        "objectkey",
        "storagekey",
        "publickey",
        "tenantid",
        "jobid",
    }
)

_NON_ALNUM: Final = re.compile(r"[^a-z0-9]")
_STRING_PATTERNS: Final = (
    (re.compile(r"\b(whsec_)[A-Za-z0-9+/=_-]+"), rf"\1{REDACTED}"),
    (re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"\b((?:sk|rk)_(?:live|test)_)[A-Za-z0-9]+"), rf"\1{REDACTED}"),
    (
        re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):[^\s/?#]+@"),
        rf"\1:{REDACTED}@",
    ),
)


def redact(value: Any) -> Any:
    """A redacted deep copy of `value` (see the module docstring for the rules)."""
    return _redact(value, 1)


def is_secret_key(key: str) -> bool:
    """True if values under `key` are treated as secrets."""
    name = _NON_ALNUM.sub("", key.lower())
    if name in ALLOWED_KEYS:
        return False
    if any(word in name for word in SECRET_WORDS):
        return True
    if "auth" in name.replace("author", ""):
        return True
    return name.endswith("key")


def mask_string(text: str) -> str:
    """`text` with credentials that appear inside it masked."""
    for pattern, replacement in _STRING_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return mask_string(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping | list | tuple) and depth > MAX_DEPTH:
        return TRUNCATED
    if isinstance(value, Mapping):
        return {str(k): _redact_item(str(k), v, depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item, depth + 1) for item in value]
    return mask_string(str(value))


def _redact_item(key: str, value: Any, depth: int) -> Any:
    if value is not None and value != "" and is_secret_key(key):
        return REDACTED
    return _redact(value, depth + 1)
