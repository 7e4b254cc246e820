"""Settings: one typed object built at start-up (never at import) and passed down.

Every field reads `SETTLER_<NAME>` from the environment (or a `.env` file); the two
connection URLs also read the plain `REDIS_URL` / `DATABASE_URL` that hosting
platforms set. With nothing configured, everything lives under `data_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration of producers, workers and the CLI."""

    model_config = SettingsConfigDict(
        env_prefix="SETTLER_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    data_dir: Path = Field(default=Path(".settler"), description="Embedded data folder.")
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SETTLER_REDIS_URL", "REDIS_URL"),
        description="External Redis; unset starts the embedded one in data_dir.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SETTLER_DATABASE_URL", "DATABASE_URL"),
        description="External database; unset uses SQLite in data_dir.",
    )
    queue_backend: Literal["redis", "postgres"] = Field(
        default="redis",
        description="Where jobs live: redis (default) or postgres (DATABASE_URL, no Redis).",
    )
    queue_schema: str = Field(
        default="bullmq",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema of the queue tables (BullMQ for Node's default: bullmq).",
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names a node of a Redis Cluster (prefix must be a {hash tag}).",
    )
    queue_prefix: str = Field(
        default="bull",
        pattern=r"^(\{[A-Za-z0-9_.-]{1,62}\}|[A-Za-z0-9_.-]{1,64})$",
        description="BullMQ key prefix (Node producers use bull by default).",
    )
    allow_eviction_policy: bool = Field(
        default=False, description="Start even if Redis may evict keys (loses jobs)."
    )
    max_payload_bytes: int = Field(
        default=1_048_576, gt=0, description="Largest job data accepted."
    )
    redis_connect_timeout_s: float = Field(
        default=1.0, gt=0, description="Fail-fast budget per Redis connection attempt."
    )
    redis_command_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest wait for one Redis reply."
    )
    express_concurrency: int = Field(
        default=2, ge=1, le=1000, description="Reserved enterprise slots per kind."
    )
    fair_share: bool = Field(
        default=True, description="Fair share by tenant inside a lane (off: class x tier only)."
    )
    tenant_concurrency_caps: dict[str, int] = Field(
        default_factory=lambda: {
            "free": 5,
            "starter": 10,
            "growth": 25,
            "scale": 50,
            "enterprise": 0,
        },
        description="Running jobs per tenant and lane while others wait, by tier; 0 = no cap.",
    )
    tenant_backlog_quotas: dict[str, int] = Field(
        default_factory=lambda: {
            "free": 1_000,
            "starter": 10_000,
            "growth": 200_000,
            "scale": 1_000_000,
            "enterprise": 0,
        },
        description="Waiting jobs per tenant (all lanes), by tier; 0 = unlimited.",
    )
    quota_retry_after_s: int = Field(
        default=30, ge=1, description="Retry-After given with a quota refusal."
    )
    fair_horizon: int = Field(
        default=1_000_000,
        ge=1000,
        le=1_048_575,
        description="Priority span ahead of the clock; deeper backlogs share its last level.",
    )
    fair_rebase_at: int = Field(
        default=1_000_000,
        ge=1000,
        le=1_048_575,
        description="Clock value at which a lane's priorities are shifted back down.",
    )
    lock_duration_ms: int = Field(
        default=30_000, ge=1000, description="Job lock; a dead worker's jobs rerun after it."
    )
    stalled_interval_ms: int = Field(
        default=30_000, ge=500, description="How often stalled jobs are looked for."
    )
    max_stalled_count: int = Field(
        default=1, ge=0, description="Stalls tolerated before a job fails (to the DLQ)."
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="Time in-flight jobs get on SIGTERM/SIGINT."
    )
    keep_completed_s: int = Field(default=86_400, ge=0, description="Age of kept completed jobs.")
    keep_completed_count: int = Field(
        default=10_000, ge=0, description="Most completed jobs kept per lane."
    )
    keep_failed_s: int = Field(
        default=14 * 86_400, ge=0, description="Age of kept failed jobs (the DLQ has a copy)."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address /metrics binds.")
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 disables /metrics.")
    dlq_sweep_interval_s: float = Field(
        default=15.0, gt=0, description="How often failed sets are copied to the DLQ."
    )
    blocking_threads: int = Field(default=16, ge=1, description="Threads for blocking handlers.")
    cpu_processes: int = Field(
        default=0, ge=0, description="Processes for CPU handlers; 0 = cores."
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Application key sealing stored secrets (see keyring.py)."
    )
    previous_secret_keys: list[SecretStr] = Field(
        default_factory=list, description="Older application keys, still able to open secrets."
    )
    outbound_allow_http: bool = Field(default=False, description="Allow http:// receivers.")
    outbound_allow_networks: list[str] = Field(
        default_factory=list, description="CIDRs outbound requests may reach despite the guard."
    )
    webhook_deadline_s: float = Field(
        default=15.0, gt=0, le=60, description="Whole-attempt deadline of one webhook POST."
    )
    webhook_retry_base_s: float = Field(
        default=2.0, ge=0, description="First webhook retry delay; doubles per attempt."
    )
    webhook_retry_max_s: float = Field(
        default=3600.0, gt=0, description="Longest retry delay, Retry-After included."
    )
    webhook_disable_after_failures: int = Field(
        default=20, ge=1, description="Consecutive failed deliveries that disable an endpoint."
    )
    webhook_disable_after_days: float = Field(
        default=5.0, gt=0, description="Days of failures without a success that disable it."
    )
    webhook_outbox_interval_s: float = Field(
        default=2.0, gt=0, description="How often unenqueued deliveries are looked for."
    )
    schedule_retention_cron: str = Field(
        default="0 2 * * *", description="Data retention schedule (UTC cron); empty disables."
    )
    reconciliation_max_upload_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Largest reconciliation source file accepted."
    )
    schedule_webhook_sweep_cron: str = Field(
        default="*/5 * * * *",
        description="Webhook retry sweep (due deliveries without a live job); empty disables.",
    )
    schedule_cache_warm_cron: str = Field(
        default="0 * * * *", description="KPI cache warming of active tenants; empty disables."
    )
    schedule_missed_grace_s: float = Field(
        default=300.0, gt=0, description="How late a scheduled run may be before it is missed."
    )
    retention_free_days: int = Field(
        default=14, ge=1, description="Days tenant data of free tenants is kept."
    )
    retention_starter_days: int = Field(
        default=30, ge=1, description="Days tenant data of starter tenants is kept."
    )
    retention_growth_days: int = Field(
        default=90, ge=1, description="Days tenant data of growth tenants is kept."
    )
    retention_scale_days: int = Field(
        default=180, ge=1, description="Days tenant data of scale tenants is kept."
    )
    retention_enterprise_days: int = Field(
        default=365, ge=1, description="Days tenant data of enterprise tenants is kept."
    )
    retention_dlq_resolved_days: int = Field(
        default=30, ge=1, description="Resolved or retried dead letters kept."
    )
    retention_schedule_runs_days: int = Field(
        default=30, ge=1, description="Run log of scheduled jobs kept."
    )
    retention_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="Rows deleted per transaction."
    )
    retention_max_batches: int = Field(
        default=1000, ge=1, description="Batches per target and run (bounds one run)."
    )
    kpi_cache_ttl_s: int = Field(
        default=7200, ge=60, description="Lifetime of cached per-tenant KPI snapshots."
    )
    kpi_scan_per_lane: int = Field(
        default=1000, ge=1, le=10_000, description="Unfinished jobs read per lane and state."
    )
    stats_recent_jobs: int = Field(
        default=50, ge=1, le=1000, description="Recent job summaries kept per tenant."
    )
    stats_flush_interval_s: float = Field(
        default=1.0, gt=0, description="How often workers write per-tenant counters."
    )

    @field_validator(
        "schedule_retention_cron", "schedule_webhook_sweep_cron", "schedule_cache_warm_cron"
    )
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        value = value.strip()
        if value and not croniter.is_valid(value, second_at_beginning=True):
            raise ValueError(f"invalid cron pattern {value!r} (5 fields, or 6 with seconds)")
        return value

    email_provider: Literal["outbox", "smtp", "resend"] = Field(
        default="outbox", description="Where emails go: .eml files in outbox_dir, SMTP or Resend."
    )
    email_from: str = Field(
        default="Settler <no-reply@example.com>",
        validation_alias=AliasChoices("SETTLER_EMAIL_FROM", "SETTLER_SMTP_FROM"),
        description="From header of every email: an address, optionally with a display name.",
    )
    smtp_host: str = Field(default="localhost", description="SMTP server host.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP server port.")
    smtp_username: str | None = Field(default=None, description="SMTP AUTH user (unset: no AUTH).")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP AUTH password.")
    smtp_starttls: bool = Field(
        default=True, description="Require STARTTLS on a plain connection (port 587)."
    )
    smtp_tls: bool = Field(default=False, description="Implicit TLS from the start (port 465).")
    smtp_ca_file: Path | None = Field(
        default=None, description="PEM file of CAs to trust for SMTP TLS instead of the system's."
    )
    smtp_timeout_s: float = Field(default=30.0, gt=0, le=600, description="SMTP I/O timeout.")
    resend_api_key: SecretStr | None = Field(default=None, description="Resend API key.")
    resend_base_url: str = Field(
        default="https://api.resend.com", description="Resend API base URL (POST {base}/emails)."
    )
    email_timeout_s: float = Field(
        default=20.0, gt=0, le=120, description="Whole-request deadline of one Resend call."
    )

    @field_validator("email_from")
    @classmethod
    def _usable_sender(cls, value: str) -> str:
        from settler_jobs.addresses import check_sender

        check_sender(value)  # UnsafeEmail is a ValueError: a clear settings error
        return value

    api_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds.")
    api_port: int = Field(
        default=8000, ge=0, le=65535, description="HTTP API port; 0 keeps `up` from serving it."
    )
    api_max_body_bytes: int = Field(
        default=1_048_576, gt=0, description="Largest request body the API reads (413 above)."
    )
    api_redis_timeout_s: float = Field(
        default=0.8,
        gt=0,
        le=5,
        description="Queue (Redis or PostgreSQL) connect/command timeout of API requests.",
    )
    api_rate_limits: dict[str, float] = Field(
        default_factory=lambda: {
            "free": 5.0,
            "starter": 20.0,
            "growth": 50.0,
            "scale": 200.0,
            "enterprise": 500.0,
        },
        description="Requests per second per tenant, by tier (JSON); 0 = unlimited.",
    )
    api_rate_burst_s: float = Field(
        default=2.0, gt=0, description="Seconds of requests a tenant may send at once."
    )
    operator_token: SecretStr | None = Field(
        default=None, description="Bearer token of the operator (admin) API routes; unset = off."
    )
    dashboard_session_s: int = Field(
        default=8 * 3600, gt=0, le=7 * 86_400, description="How long a dashboard login lasts."
    )
    worker_heartbeat_s: float = Field(
        default=5.0, gt=0, description="How often a worker process announces itself in Redis."
    )
    s3_bucket: str | None = Field(
        default=None, description="Bucket for exports; unset keeps them in data_dir/files."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (unset: AWS for the region)."
    )
    s3_region: str | None = Field(default=None, description="Region of the bucket.")
    s3_access_key_id: str | None = Field(
        default=None, description="Access key id (unset: boto3's credential chain)."
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="Secret access key matching s3_access_key_id."
    )
    export_ttl_days: float = Field(
        default=7.0, gt=0, le=3650, description="Days a generated export stays downloadable."
    )
    export_batch_rows: int = Field(
        default=5000, ge=100, le=100_000, description="Rows read per query while exporting."
    )
    export_pdf_max_rows: int = Field(
        default=50_000, ge=1, description="Largest PDF export (fpdf2 holds a PDF in memory)."
    )
    alert_interval_s: float = Field(
        default=15.0, gt=0, description="How often workers refresh alert metrics and evaluate."
    )
    alert_for_s: float = Field(
        default=60.0, ge=0, description="How long a condition must hold before its alert fires."
    )
    alert_queue_depth: int = Field(
        default=1000, ge=0, description="Waiting jobs in one lane above which an alert fires."
    )
    alert_oldest_waiting_s: float = Field(
        default=300.0, ge=0, description="Age of a lane's oldest waiting job that alerts."
    )
    alert_failure_ratio: float = Field(
        default=0.1, ge=0, le=1, description="Share of finished jobs failing for good that alerts."
    )
    alert_failure_window_s: float = Field(
        default=600.0, gt=0, description="Window of the failure ratio."
    )
    alert_failure_min_jobs: int = Field(
        default=10, ge=1, description="Finished jobs in the window before the ratio counts."
    )
    alert_active_stuck_s: float = Field(
        default=1800.0, gt=0, description="Time a job may stay active before it counts as stuck."
    )
    alert_dlq_growth: int = Field(
        default=10, ge=0, description="Open dead letters created within the window that alert."
    )
    alert_dlq_window_s: float = Field(
        default=3600.0, gt=0, description="Window of the dead-letter growth alert."
    )
    alert_min_workers: int = Field(
        default=1, ge=0, description="Fewer live worker heartbeats than this alert."
    )
    alert_repeat_s: float = Field(
        default=14_400.0, ge=0, description="Re-notify a still-firing alert after this; 0 never."
    )
    alert_emails: list[str] = Field(
        default_factory=list, description="Operator addresses alerts are emailed to (JSON list)."
    )
    alert_webhook_url: str | None = Field(
        default=None, description="URL alerts are POSTed to (through the SSRF guard)."
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None, description="whsec_ secret signing alert webhooks (Standard Webhooks)."
    )

    @model_validator(mode="after")
    def _cluster_ready(self) -> Settings:
        # Every multi-key script and transaction must stay in one slot: BullMQ's way is a
        # prefix that is a hash tag, so all of the deployment's keys share a slot.
        if self.redis_cluster:
            if not self.redis_url:
                raise ValueError("SETTLER_REDIS_CLUSTER needs REDIS_URL (a node of the cluster)")
            if not self.queue_prefix.startswith("{"):
                raise ValueError(
                    "SETTLER_REDIS_CLUSTER needs a hash-tagged SETTLER_QUEUE_PREFIX such as "
                    f"{{settler}} (got {self.queue_prefix!r}), so each script's keys share a slot"
                )
        return self

    @model_validator(mode="after")
    def _postgres_ready(self) -> Settings:
        if self.queue_backend == "postgres":
            if not self.database_url or not self.effective_database_url.startswith("postgresql"):
                raise ValueError(
                    "SETTLER_QUEUE_BACKEND=postgres needs DATABASE_URL naming a PostgreSQL database"
                )
            if self.redis_cluster:
                raise ValueError("SETTLER_REDIS_CLUSTER is for the Redis queue backend")
        return self

    @property
    def queue_dsn(self) -> str:
        """The queue database as a plain libpq URL (PostgreSQL backend only)."""
        url = self.effective_database_url
        return "postgresql://" + url.split("://", 1)[1]

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("tenant_concurrency_caps", "tenant_backlog_quotas")
    @classmethod
    def _tier_counts(cls, value: dict[str, int]) -> dict[str, int]:
        from settler_jobs.domain import Tier

        counts = {Tier.parse(name).value: int(n) for name, n in value.items()}
        if any(n < 0 for n in counts.values()):
            raise ValueError("caps and quotas must not be negative")
        return counts

    @field_validator("api_rate_limits")
    @classmethod
    def _tier_rates(cls, value: dict[str, float]) -> dict[str, float]:
        from settler_jobs.domain import Tier

        rates = {Tier.parse(name).value: float(rate) for name, rate in value.items()}
        if any(rate < 0 for rate in rates.values()):
            raise ValueError("rate limits must not be negative")
        return rates

    @property
    def sqlite_url(self) -> str:
        """The embedded database URL inside data_dir."""
        return f"sqlite+aiosqlite:///{self.data_dir / 'settler.db'}"

    @property
    def effective_database_url(self) -> str:
        """The database to use: DATABASE_URL, else the embedded SQLite file."""
        return normalise_database_url(self.database_url) if self.database_url else self.sqlite_url

    @property
    def files_dir(self) -> Path:
        """Local object storage (exports) for the embedded default."""
        return self.data_dir / "files"

    @property
    def outbox_dir(self) -> Path:
        """Email outbox (.eml files) for the embedded default."""
        return self.data_dir / "outbox"

    @property
    def redis_dir(self) -> Path:
        """Where the embedded Redis keeps its append-only file and socket."""
        return self.data_dir / "redis"


def normalise_database_url(url: str) -> str:
    """Map plain `postgres://` / `postgresql://` / `sqlite://` URLs to async drivers."""
    for plain, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def reference_markdown() -> str:
    """Every setting as a Markdown table: variable, default, meaning (docs/configuration.md)."""
    lines = [
        "# Configuration",
        "",
        "Every setting reads `SETTLER_<NAME>` from the environment or a `.env` file; the",
        "connection URLs also read plain `REDIS_URL` and `DATABASE_URL`. Generated from",
        "`settler_jobs.config.Settings` by `scripts/config_reference.py`; a test keeps it current.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = (
            "unset"
            if default is None
            else "(secret)"
            if isinstance(default, SecretStr)
            else default
        )
        text = (field.description or "").replace("|", "\\|")
        lines.append(f"| `SETTLER_{name.upper()}` | `{shown}` | {text} |")
    return "\n".join(lines) + "\n"
