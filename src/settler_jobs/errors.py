"""Every error Settler Jobs raises, in one tree.

    SettlerError
    ├── ConfigError                 settings or environment unusable (refuse to start)
    │   └── RedisConfigError        Redis too old, or may evict keys
    ├── QueueUnavailable            Redis unreachable; producers fail fast (HTTP 503)
    ├── InvalidJob                  a submission is malformed; nothing was enqueued
    │   ├── UnknownJobKind
    │   └── PayloadTooLarge
    ├── QuotaExceeded               a tenant's waiting jobs would pass its quota (HTTP 429)
    ├── NotFound                    no such job / DLQ entry visible to the caller
    ├── InvalidState                the operation does not apply in the current state
    └── JobFailure                  raised by handlers to steer the worker
        ├── RetryLater(delay_s)     retry after a chosen delay (counts as an attempt)
        └── PermanentFailure        do not retry; go straight to the dead-letter queue
            └── JobCancelled        an operator cancelled the job (no DLQ entry)

The docstring of each class is its default message.
"""

from __future__ import annotations


class SettlerError(Exception):
    """Settler Jobs failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(SettlerError):
    """The configuration cannot be used; fix it and start again."""


class RedisConfigError(ConfigError):
    """Redis is not fit to hold jobs (version or eviction policy)."""


class QueueUnavailable(SettlerError):
    """Redis is unreachable; nothing was enqueued. Retry later."""


class InvalidJob(SettlerError):
    """The job submission is invalid; nothing was enqueued."""


class UnknownJobKind(InvalidJob):
    """No handler is registered for this job kind; add it to `default_registry()` in registry.py."""


class PayloadTooLarge(InvalidJob):
    """The job data is larger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"job data is {size} bytes, over the limit of {limit} bytes; store large "
            "inputs elsewhere and pass a reference"
        )
        self.size = size
        self.limit = limit


class QuotaExceeded(SettlerError):
    """The tenant has too many waiting jobs; nothing was enqueued. Retry later."""

    def __init__(self, tenant_id: str, backlog: int, adding: int, quota: int, retry_after_s: int):
        super().__init__(
            f"tenant {tenant_id!r} has {backlog} waiting jobs; adding {adding} would pass its "
            f"quota of {quota}; nothing was enqueued, retry in {retry_after_s}s"
        )
        self.tenant_id = tenant_id
        self.backlog = backlog
        self.adding = adding
        self.quota = quota
        self.retry_after_s = retry_after_s


class NotFound(SettlerError):
    """Not found."""


class InvalidState(SettlerError):
    """The operation does not apply to the object in its current state."""


class JobFailure(SettlerError):
    """A job attempt failed."""


class RetryLater(JobFailure):
    """The attempt failed for a passing reason; retry after `delay_s`."""

    def __init__(self, delay_s: float, message: str | None = None) -> None:
        super().__init__(message or f"retry requested in {delay_s:g}s")
        self.delay_s = delay_s


class PermanentFailure(JobFailure):
    """The job cannot succeed by retrying; it goes to the dead-letter queue."""


class JobCancelled(PermanentFailure):
    """The job was cancelled."""
