"""Redaction of secrets in payloads (table-driven)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from settler_jobs.redaction import MAX_DEPTH, REDACTED, TRUNCATED, is_secret_key, redact

SECRET_KEYS = [
    "password",
    "db_password",
    "passwd",
    "secret",
    "clientSecret",
    "token",
    "accessToken",
    "refresh-token",
    "api_key",
    "apiKey",
    "X-API-KEY",
    "Authorization",
    "auth",
    "basicAuth",
    "oauth",
    "credentials",
    "private_key",
    "signature",
    "Cookie",
    "set-cookie",
    "sessionId",
    "key",
    "signingKey",
    "encryption_key",
    "passphrase",
]
PLAIN_KEYS = [
    "tenantId",
    "jobId",
    "idempotencyKey",
    "idempotency_key",
    "cacheKeys",
    "cacheKey",
    "publicKey",
    "author",
    "authorName",
    "keyId",
    "url",
    "amount",
    "webhookId",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_redacted(key: str) -> None:
    assert is_secret_key(key)
    assert redact({key: "s3cr3t", "other": 1}) == {key: REDACTED, "other": 1}


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact({key: "value"}) == {key: "value"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"token": None}, {"token": None}),
        ({"token": ""}, {"token": ""}),
        ({"token": {"nested": "x"}}, {"token": REDACTED}),
        ({"apiKeys": ["a", "b"]}, {"apiKeys": REDACTED}),
        ({"password": 1234}, {"password": REDACTED}),
    ],
)
def test_secret_values_of_any_type(value: Any, expected: Any) -> None:
    assert redact(value) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", f"whsec_{REDACTED}"),
        ("header: Bearer eyJhbGciOi.J9.sig-_x", f"header: Bearer {REDACTED}"),
        ("bearer abcdefgh12345678", f"bearer {REDACTED}"),
        ("missing bearer token", "missing bearer token"),
        ("sk_live_51Habc123XYZ and sk_test_4eC39Hq", f"sk_live_{REDACTED} and sk_test_{REDACTED}"),
        ("rk_live_abc123", f"rk_live_{REDACTED}"),
        ("pk_live_abc123", "pk_live_abc123"),
        ("postgres://app:hunter2@db:5432/app", f"postgres://app:{REDACTED}@db:5432/app"),
        ("redis://:p%40ss@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
        (
            "see https://u:p@x.test/a and https://v:q@y.test",
            f"see https://u:{REDACTED}@x.test/a and https://v:{REDACTED}@y.test",
        ),
        ("https://example.test:8443/path@v2", "https://example.test:8443/path@v2"),
        ("https://user@example.test/", "https://user@example.test/"),
        ("plain text", "plain text"),
    ],
)
def test_credentials_in_strings_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact({"note": [text]}) == {"note": [expected]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (3, 3),
        (2.5, 2.5),
        ((1, "a"), [1, "a"]),
        ({1: "one"}, {"1": "one"}),
        (datetime(2024, 5, 1, tzinfo=UTC), "2024-05-01 00:00:00+00:00"),
    ],
)
def test_results_are_json_like(value: Any, expected: Any) -> None:
    assert redact(value) == expected
    json.dumps(redact(value))


def test_input_is_not_modified() -> None:
    original = {"password": "x", "items": [{"token": "y"}]}
    copy = redact(original)
    assert original == {"password": "x", "items": [{"token": "y"}]}
    copy["items"].append("z")
    assert len(original["items"]) == 1


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"child": value}
    return value


@pytest.mark.parametrize(
    ("depth", "truncated"), [(MAX_DEPTH, False), (MAX_DEPTH + 1, True), (1000, True)]
)
def test_depth_is_limited(depth: int, truncated: bool) -> None:
    result = redact(_nested(depth))
    for _ in range(MAX_DEPTH):
        assert isinstance(result, dict)
        result = result["child"]
    assert result == (TRUNCATED if truncated else "leaf")


def test_self_reference_ends() -> None:
    loop: list[Any] = []
    loop.append(loop)
    result = redact(loop)
    for _ in range(MAX_DEPTH):
        result = result[0]
    assert result == TRUNCATED
