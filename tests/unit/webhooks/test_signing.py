"""Standard Webhooks headers: verifiable by the reference library, rotation, no leaks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from settler_jobs.secrets_box import new_webhook_secret
from settler_jobs.webhooks.signing import DEFAULT_USER_AGENT, json_body, secret_key, sign_headers

WEBHOOK_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f1W"


def _sign(secrets: list[str], body: bytes, when: datetime | None = None) -> dict[str, str]:
    return sign_headers(
        webhook_id=WEBHOOK_ID,
        timestamp=when or datetime.now(UTC),
        body=body,
        secrets=secrets,
        user_agent=DEFAULT_USER_AGENT,
    )


def test_headers_verify_with_the_reference_library() -> None:
    secret = new_webhook_secret()
    body = json_body({"type": "job.completed", "data": {"id": "j1", "note": "café ✓"}})
    headers = _sign([secret], body)
    assert set(headers) == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "user-agent",
    }
    assert headers["webhook-id"] == WEBHOOK_ID
    assert headers["content-type"] == "application/json"
    assert "Settler" in headers["user-agent"]
    assert Webhook(secret).verify(body, headers)["data"]["note"] == "café ✓"


def test_every_secret_of_a_rotation_verifies() -> None:
    new, old = new_webhook_secret(), new_webhook_secret(24)
    body = json_body({"a": 1})
    headers = _sign([new, old], body)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(entry.startswith("v1,") for entry in entries)
    for secret in (new, old):
        Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)


def test_a_tampered_body_or_timestamp_fails() -> None:
    secret = new_webhook_secret()
    body = json_body({"amount": 100})
    headers = _sign([secret], body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(json_body({"amount": 900}), headers)
    moved = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, moved)
    renamed = {**headers, "webhook-id": "msg_other"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, renamed)


def test_headers_are_stable_across_calls() -> None:
    secret = new_webhook_secret()
    body = json_body({"a": 1})
    when = datetime(2030, 1, 2, 3, 4, 5, 999_000, tzinfo=UTC)
    first = _sign([secret], body, when)
    assert first == _sign([secret], body, when)
    assert first["webhook-timestamp"] == str(int(when.timestamp()))
    retry = _sign([secret], body, when + timedelta(minutes=1))
    assert retry["webhook-id"] == first["webhook-id"]


def test_time_zones_are_converted_not_replaced() -> None:
    secret = new_webhook_secret()
    body = json_body({"a": 1})
    now = datetime.now(UTC)
    local = now.astimezone(timezone(timedelta(hours=5, minutes=30)))
    headers = _sign([secret], body, local)
    assert headers == _sign([secret], body, now)
    Webhook(secret).verify(body, headers)
    with pytest.raises(ValueError, match="timezone"):
        _sign([secret], body, datetime.now())  # naive on purpose


def test_the_secret_never_appears_in_headers() -> None:
    secret = new_webhook_secret()
    headers = _sign([secret], json_body({"a": 1}))
    raw = secret.removeprefix("whsec_")
    joined = " ".join(headers.values())
    assert secret not in joined and raw not in joined and raw.rstrip("=")[:16] not in joined


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "whsec_" + "!" * 40, "whsec_" + base64.b64encode(b"x" * 8).decode(), "whsec_a"],
)
def test_bad_secrets_are_refused_without_echo(secret: str) -> None:
    with pytest.raises(ValueError) as caught:
        _sign([secret], b"{}")
    assert secret in ("", "whsec_") or secret not in str(caught.value)


def test_secrets_decode_strictly_with_or_without_prefix_and_padding() -> None:
    raw = bytes(range(32))
    padded = base64.b64encode(raw).decode()
    assert padded.endswith("=")
    for text in (padded, "whsec_" + padded, "whsec_" + padded.rstrip("=")):
        assert secret_key(text) == raw


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("webhook_id", ""),
        ("webhook_id", "msg.1"),
        ("webhook_id", "msg\r\nx: y"),
        ("user_agent", "Settler\n"),
        ("user_agent", ""),
    ],
)
def test_unsafe_ids_and_user_agents_are_refused(field: str, value: str) -> None:
    kwargs: dict[str, str] = {"webhook_id": WEBHOOK_ID, "user_agent": DEFAULT_USER_AGENT}
    kwargs[field] = value
    with pytest.raises(ValueError):
        sign_headers(
            timestamp=datetime.now(UTC), body=b"{}", secrets=[new_webhook_secret()], **kwargs
        )


def test_secret_lists_and_bodies_are_checked() -> None:
    secret = new_webhook_secret()
    with pytest.raises(ValueError):
        _sign([], b"{}")
    with pytest.raises(ValueError):
        _sign([secret] * 6, b"{}")
    with pytest.raises(ValueError, match="UTF-8"):
        _sign([secret], b"\xff\xfe")


def test_json_body_is_compact_utf8_and_refuses_nan() -> None:
    body = json_body({"b": [1, 2.5, None, True], "a": "é"})
    assert body == '{"b":[1,2.5,null,true],"a":"é"}'.encode()
    assert json.loads(body) == {"b": [1, 2.5, None, True], "a": "é"}
    with pytest.raises(ValueError):
        json_body({"x": float("nan")})
    with pytest.raises(ValueError):
        json_body({"x": "\ud800"})
