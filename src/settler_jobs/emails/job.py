"""The email-sending kind: one job sends one template to up to `MAX_RECIPIENTS` addresses.

The payload is checked when the job is submitted (a bad address, template or data is
refused before anything is enqueued) and again when it runs. Outcome of a run: every
recipient sent (or sent before) -> done, with per-recipient statuses; a passing
provider failure -> retry (``Retry-After`` when the provider gave one, else backoff);
any recipient failed for good, or bad input -> `PermanentFailure` (a dead letter, whose
retry sends only to the recipients not yet sent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from settler_jobs.addresses import check_address
from settler_jobs.context import JobContext
from settler_jobs.emails.providers import provider_from_settings
from settler_jobs.emails.send import EmailJob, JobReport, send_job
from settler_jobs.emails.sender import EmailProvider
from settler_jobs.emails.templates import check_data, check_template
from settler_jobs.errors import ConfigError, PermanentFailure, RetryLater
from settler_jobs.resources import Resources

MAX_RECIPIENTS: Final = 50


class EmailPayload(BaseModel):
    """An email job's data (camelCase on the wire, like every job's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    template: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    idempotencyKey: str | None = Field(default=None, min_length=1, max_length=255)
    """The sent-ledger key; None: the job id (retries of this job only)."""
    replyTo: str | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        checked = [check_address(a, header="To") for a in value]
        return list(dict.fromkeys(checked))  # one email per address, first order kept

    @field_validator("replyTo")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value, header="Reply-To")

    @field_validator("template")
    @classmethod
    def _known(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="after")
    def _data_fits(self) -> EmailPayload:
        check_data(self.template, self.data)
        return self


ProviderFactory = Callable[[Resources], EmailProvider]


def default_provider(resources: Resources) -> EmailProvider:
    """The provider the settings choose (Resend goes through the SSRF-guarded client)."""
    return provider_from_settings(resources.settings, lambda: resources.outbound_http)


def email_handler(
    provider_for: ProviderFactory = default_provider,
) -> Callable[[EmailPayload, JobContext], Any]:
    """The handler, sending through `provider_for(resources)` (tests inject a provider)."""

    async def send_email(payload: EmailPayload, ctx: JobContext) -> dict[str, Any]:
        """Send the job's emails; see the module docstring for the outcome."""
        res = ctx.resources
        job = EmailJob(
            tenant_id=ctx.tenant_id,
            key=payload.idempotencyKey or f"job:{ctx.job_id}",
            template=payload.template,
            data=payload.data,
            to=tuple(payload.to),
            job_id=ctx.job_id,
            is_last=ctx.is_last_attempt,
            sender=res.settings.email_from,
            reply_to=payload.replyTo,
        )
        try:
            provider = provider_for(res)
            report = await send_job(job, provider=provider, sessions=res.sessions, now=res.now)
        except ConfigError as exc:
            raise PermanentFailure(f"email provider not usable: {exc}") from exc
        except ValueError as exc:  # TemplateError, UnsafeEmail
            raise PermanentFailure(f"email refused: {exc}") from exc
        return _outcome(job, report)

    return send_email


send_email = email_handler()


def _outcome(job: EmailJob, report: JobReport) -> dict[str, Any]:
    if report.fatal is not None:
        raise PermanentFailure(f"email provider refused: {report.fatal}")
    if report.retry:
        reason = "; ".join(f"{r}: {e}" for r, e in report.errors.items())
        if report.retry_after_s is not None:
            raise RetryLater(report.retry_after_s, f"email provider busy: {reason}")
        raise EmailRetry(f"email provider failed, will retry: {reason}")
    failed = report.failed
    if failed:
        detail = "; ".join(f"{r}: {report.errors.get(r, 'failed earlier')}" for r in failed)
        raise PermanentFailure(
            f"email to {len(failed)} of {len(job.to)} recipients failed: {detail}"
        )
    return {"template": job.template, "idempotencyKey": job.key, "recipients": report.statuses}


class EmailRetry(Exception):
    """A passing provider failure without a suggested delay: the kind's backoff applies."""
