"""The registry of job kinds: one line per kind, defaults from the design brief."""

from __future__ import annotations

from settler_jobs.domain import PriorityClass, RetryPolicy
from settler_jobs.emails import job as email
from settler_jobs.exports import job as exports
from settler_jobs.kinds import JobKind, Registry
from settler_jobs.reconcile import job as reconciliation
from settler_jobs.retention import job as retention
from settler_jobs.scheduling.system import ScheduledPayload
from settler_jobs.tenants import job as cache_warm
from settler_jobs.webhooks import job as webhooks


def default_registry() -> Registry:
    """The seed's five kinds and the two scheduled system kinds, with their defaults."""
    return Registry(
        [
            JobKind(
                "reconciliation",
                reconciliation.reconcile,
                reconciliation.ReconciliationPayload,
                PriorityClass.HIGH,
                concurrency=8,
                retry=RetryPolicy(attempts=3, base_delay_s=2),
                timeout_s=1800,
            ),
            JobKind(
                "webhook-delivery",
                webhooks.deliver_webhook,
                webhooks.DeliveryPayload,
                PriorityClass.NORMAL,
                concurrency=10,
                # Delays come from the handler (Retry-After or backoff), not from these.
                retry=RetryPolicy(attempts=5, base_delay_s=2),
                timeout_s=90,
                periodic=(webhooks.flush_outbox_step,),
                retry_dead=webhooks.retry_dead_delivery,
            ),
            JobKind(
                "export-generation",
                exports.generate_export,
                exports.ExportPayload,
                PriorityClass.NORMAL,
                concurrency=3,
                retry=RetryPolicy(attempts=2, base_delay_s=5),
                timeout_s=900,
            ),
            JobKind(
                "email-sending",
                email.send_email,
                email.EmailPayload,
                PriorityClass.LOW,
                concurrency=5,
                retry=RetryPolicy(attempts=3, base_delay_s=5),
                timeout_s=60,
            ),
            JobKind(
                "cache-warming",
                cache_warm.warm_cache,
                cache_warm.CacheWarmPayload,
                PriorityClass.LOW,
                concurrency=2,
                retry=RetryPolicy(attempts=1),
                timeout_s=300,
            ),
            # Scheduled system jobs (see schedules.py); they run for the system tenant.
            JobKind(
                "data-retention",
                retention.apply_retention,
                retention.RetentionPayload,
                PriorityClass.LOW,
                concurrency=1,
                retry=RetryPolicy(attempts=2, base_delay_s=60),
                timeout_s=3600,
            ),
            JobKind(
                "webhook-sweep",
                webhooks.sweep_webhooks,
                ScheduledPayload,
                PriorityClass.LOW,
                concurrency=1,
                retry=RetryPolicy(attempts=1),
                timeout_s=300,
            ),
        ]
    )
