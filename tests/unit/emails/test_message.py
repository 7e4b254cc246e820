"""Email input rules without I/O: header injection, addresses, templates, classification."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from typing import Any

import aiosmtplib
import httpx
import pytest

from settler_jobs.addresses import UnsafeEmail, check_address, check_sender
from settler_jobs.emails.message import compose
from settler_jobs.emails.resend import _outcome
from settler_jobs.emails.sender import ProviderError
from settler_jobs.emails.service import build_payload
from settler_jobs.emails.smtp import classify
from settler_jobs.emails.templates import MAX_DATA_BYTES, TEMPLATES, TemplateError, render
from settler_jobs.errors import InvalidJob

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SENDER = "Settler <no-reply@example.com>"
SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "welcome": {"name": "Ann", "login_url": "https://app.example.com/login"},
    "export_ready": {"report_name": "Q3", "download_url": "https://files.example.com/q3.csv"},
    "reconciliation_completed": {"run_id": "r-1", "matched": 10, "unmatched": 2},
    "webhook_endpoint_disabled": {"endpoint_url": "https://h.example.com", "reason": "50 fails"},
    "dead_letter_digest": {"entries": [{"kind": "export", "job_id": "j1", "reason": "boom"}]},
    "operator_alert": {
        "event": "firing",
        "alert": "QueueDepthHigh",
        "summary": "1200 jobs waiting in email",
        "labels": {"queue": "email"},
        "since": "2026-11-28T12:00:00+00:00",
    },
}


@pytest.mark.parametrize(
    ("field", "value", "names"),
    [
        ("to", "ann@example.com\r\nBcc: evil@example.com", "CR/LF"),
        ("to", "ann@example.com\nBcc: evil@example.com", "LF"),
        ("to", "ann@example.com\rX", "CR"),
        ("to", "ann@example.com\x00", "NUL"),
        ("reply_to", "r@example.com\nBcc: evil@example.com", "LF"),
        ("sender", "Settler\r\nBcc: evil@example.com <no-reply@example.com>", "CR/LF"),
        ("sender", "Settler <no-reply@example.com>\x00", "NUL"),
        ("subject", "Hi\r\nBcc: evil@example.com", "CR/LF"),
        ("subject", "Hi\nthere", "LF"),
        ("subject", "Hi\x00", "NUL"),
    ],
)
def test_line_breaks_and_nul_in_any_header_are_refused(field: str, value: str, names: str) -> None:
    args: dict[str, Any] = {"sender": SENDER, "to": "ann@example.com", "reply_to": None}
    data = {"name": "Ann"}
    if field == "subject":
        data["name"] = value
    else:
        args[field] = value
    with pytest.raises(UnsafeEmail, match=rf"contains {names}: .*header injection"):
        compose(render("welcome", data), digest="d", date=NOW, **args)


def test_the_handler_side_refuses_an_injected_subject_as_a_permanent_failure() -> None:
    # Data reaches the Subject only through rendering, which runs in the worker.
    rendered = render("welcome", {"name": "Ann\r\nBcc: evil@example.com"})
    assert "\r\n" in rendered.subject
    with pytest.raises(UnsafeEmail):
        compose(rendered, sender=SENDER, to="ann@example.com", digest="d", date=NOW)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ann@example.com", "ann@example.com"),
        ("Ann.B+tag@Example.COM", "Ann.B+tag@example.com"),
        ("ann@exämple.com", "ann@xn--exmple-cua.com"),
    ],
)
def test_addresses_are_normalised(address: str, expected: str) -> None:
    assert check_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "ann",
        "ann@",
        "@example.com",
        "Ann <ann@example.com>",
        "a@example.com, b@example.com",
        "ann@localhost",
        "ann@box.test",
        "änn@example.com",
        "a" * 250 + "@example.com",
        "ann@[127.0.0.1]",
    ],
)
def test_unusable_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeEmail):
        check_address(address)


def test_sender_may_carry_a_display_name_but_only_one_address() -> None:
    assert check_sender('"Acme, Inc" <billing@example.com>') == '"Acme, Inc" <billing@example.com>'
    with pytest.raises(UnsafeEmail, match="not an address"):
        check_sender("a@example.com, b@example.com")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_renders_a_subject_html_and_text(name: str) -> None:
    rendered = render(name, SAMPLE_DATA[name])
    assert rendered.subject and "\n" not in rendered.subject
    assert rendered.html.lstrip().startswith("<!doctype html>")
    assert rendered.text.strip() and "<" not in rendered.text.replace("<x>", "")


def test_html_escapes_data_and_text_keeps_it_verbatim() -> None:
    hostile = '<script>alert("x")</script> & <b>'
    rendered = render("welcome", {"name": hostile})
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;" in rendered.html
    assert hostile in rendered.text


def test_link_values_must_be_http_urls() -> None:
    for bad in ("javascript:alert(1)", 'https://ok.example.com/" onclick="x', "data:text/html,x"):
        with pytest.raises(TemplateError, match="not an absolute http"):
            render("export_ready", {"report_name": "r", "download_url": bad})


def test_unknown_template_missing_keys_and_oversized_data_are_refused() -> None:
    with pytest.raises(TemplateError, match="known templates: dead_letter_digest"):
        render("invoice", {})
    with pytest.raises(TemplateError, match="needs data keys: report_name, download_url"):
        render("export_ready", {})
    with pytest.raises(TemplateError, match="over the limit"):
        render("welcome", {"name": "x" * MAX_DATA_BYTES})
    with pytest.raises(TemplateError, match=r"no attribute .job_id."):  # used, but missing
        render("dead_letter_digest", {"entries": [{"kind": "export"}]})


def test_the_mime_message_has_text_then_html_and_a_stable_message_id() -> None:
    rendered = render("welcome", {"name": "Ann"})
    email = compose(rendered, sender=SENDER, to="ann@example.com", digest="abc123", date=NOW)
    parsed = message_from_bytes(email.to_mime().as_bytes(), policy=default)
    assert parsed["Message-ID"] == "<abc123@example.com>"
    assert parsed["From"] == SENDER and parsed["To"] == "ann@example.com"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_payload_checks_surface_as_invalid_job_before_enqueueing() -> None:
    payload = build_payload(["a@example.com", "a@example.com", "b@example.org"], "welcome",
                            {"name": "A"}, idempotency_key="k")  # fmt: skip
    assert payload["to"] == ["a@example.com", "b@example.org"]
    for to, template, data, match in [
        ("a@example.com\nBcc: x@example.com", "welcome", {"name": "A"}, "header injection"),
        ("a@example.com", "nope", {}, "unknown email template"),
        ("a@example.com", "welcome", {}, "needs data keys: name"),
        ([], "welcome", {"name": "A"}, "to"),
        ([f"u{i}@example.com" for i in range(51)], "welcome", {"name": "A"}, "at most 50"),
    ]:
        with pytest.raises(InvalidJob, match=match):
            build_payload(to, template, data, idempotency_key="k")


@pytest.mark.parametrize(
    ("error", "permanent", "scope"),
    [
        (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a")]),
         True, "recipient"),
        (aiosmtplib.SMTPRecipientRefused(450, "busy", "a"), False, "recipient"),
        (aiosmtplib.SMTPDataError(554, "spam"), True, "recipient"),
        (aiosmtplib.SMTPDataError(421, "closing"), False, "provider"),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), True, "provider"),
        (aiosmtplib.SMTPResponseException(421, "closing"), False, "provider"),
        (aiosmtplib.SMTPServerDisconnected("gone"), False, "provider"),
        (aiosmtplib.SMTPConnectError("refused"), False, "provider"),
        (aiosmtplib.SMTPTimeoutError("slow"), False, "provider"),
        (aiosmtplib.SMTPNotSupported("no STARTTLS"), True, "provider"),
        (ConnectionRefusedError(), False, "provider"),
    ],
)  # fmt: skip
def test_smtp_failures_are_classified(error: Exception, permanent: bool, scope: str) -> None:
    classified = classify(error)
    assert (classified.permanent, classified.scope) == (permanent, scope)


@pytest.mark.parametrize(
    ("status", "headers", "permanent", "scope", "retry_after"),
    [
        (422, {}, True, "recipient", None),
        (400, {}, True, "recipient", None),
        (401, {}, True, "provider", None),
        (403, {}, True, "provider", None),
        (429, {"retry-after": "7"}, False, "provider", 7.0),
        (503, {"retry-after": "2"}, False, "provider", 2.0),
        (500, {}, False, "provider", None),
    ],
)
def test_resend_answers_are_classified(
    status: int, headers: dict[str, str], permanent: bool, scope: str, retry_after: float | None
) -> None:
    with pytest.raises(ProviderError) as caught:
        _outcome(httpx.Response(status, headers=headers, json={"message": "x"}))
    error = caught.value
    assert (error.permanent, error.scope, error.retry_after_s) == (permanent, scope, retry_after)


def test_resend_success_returns_its_id() -> None:
    assert _outcome(httpx.Response(200, json={"id": "re_123"})) == "re_123"


def test_an_unusable_from_setting_is_refused_at_start_up() -> None:
    from pydantic import ValidationError

    from settler_jobs.config import Settings

    assert Settings(email_from="Acme <billing@example.com>").email_from.startswith("Acme")
    with pytest.raises(ValidationError, match="header injection"):
        Settings(email_from="Acme\r\nBcc: x@example.com <billing@example.com>")
    with pytest.raises(ValidationError, match="not a usable email address"):
        Settings(email_from="billing")
