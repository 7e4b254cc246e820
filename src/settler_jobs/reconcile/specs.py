"""What a reconciliation reads and how it matches: adapter specs, field mapping, rules.

Specs are frozen pydantic models, so a definition stored as JSON validates on the way
back and a spec pickles into a worker process. Secret fields (`SECRET_FIELDS`) never go
into job data or plain columns: the store seals them with `SecretBox`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from settler_jobs.reconcile.currencies import MINOR_UNITS

COLUMN = Annotated[str, Field(min_length=1, max_length=200)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldMapping(_Frozen):
    """Which source column holds each field; None: the source has no such column.

    `timezone` applies to dates and to timestamps without an offset; `date_format`
    (strftime, e.g. ``%d/%m/%Y``) replaces ISO 8601 parsing when given.
    """

    id: COLUMN | None = "id"
    amount: COLUMN = "amount"
    currency: COLUMN | None = "currency"
    date: COLUMN | None = "date"
    description: COLUMN | None = "description"
    reference: COLUMN | None = "reference"
    default_currency: str | None = None
    timezone: str = "UTC"
    date_format: str | None = None

    @field_validator("default_currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is not None and value not in MINOR_UNITS:
            raise ValueError(f"unknown ISO 4217 currency {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def columns(self) -> dict[str, str]:
        """Canonical field name -> source column, for the mapped fields."""
        fields = {
            "id": self.id,
            "amount": self.amount,
            "currency": self.currency,
            "date": self.date,
            "description": self.description,
            "reference": self.reference,
        }
        return {name: column for name, column in fields.items() if column is not None}


class FileSource(_Frozen):
    """A CSV, JSON Lines or Parquet file in the tenant's file storage (relative path)."""

    kind: Literal["file"] = "file"
    format: Literal["csv", "jsonl", "parquet"]
    path: str = Field(min_length=1, max_length=1000)
    mapping: FieldMapping = FieldMapping()
    delimiter: str = Field(default=",", min_length=1, max_length=1)


class SqlSource(_Frozen):
    """One read-only SELECT against a configured database; `url` is secret."""

    kind: Literal["sql"] = "sql"
    url: str = Field(min_length=1, max_length=2000)
    query: str = Field(min_length=1, max_length=20000)
    mapping: FieldMapping = FieldMapping()


class HttpSource(_Frozen):
    """A paginated JSON API (GET, through the SSRF guard); `headers` are secret.

    Each page is a JSON object whose `items_field` holds the records; `next_field` holds
    the next page's cursor (sent as query parameter `cursor_param`) or absolute URL.
    """

    kind: Literal["http"] = "http"
    url: str = Field(min_length=1, max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict)
    items_field: str = "data"
    next_field: str | None = "next"
    cursor_param: str = "cursor"
    max_pages: int = Field(default=1000, ge=1, le=100_000)
    mapping: FieldMapping = FieldMapping()


SourceSpec = Annotated[FileSource | SqlSource | HttpSource, Field(discriminator="kind")]

SECRET_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "file": (),
    "sql": ("url",),
    "http": ("headers",),
}
"""Per adapter kind, the fields sealed at rest and never shown or put in job data."""


class MatchRules(_Frozen):
    """How records pair up. Tolerances are inclusive; see `matching` for the rules."""

    match_on_id: bool = True
    match_on_reference: bool = True
    amount_tolerance_minor: int = Field(default=0, ge=0)
    amount_tolerance_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    date_window_days: int | None = Field(default=3, ge=0, le=3650)
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    description_min_similarity: float | None = Field(default=None, gt=0, le=1)
    description_window_days: int = Field(default=30, ge=0, le=3650)
    max_candidates: int = Field(default=32, ge=1, le=1000)
    many_to_one: bool = False
    """Let groups of same-day sources pair with one target (see `grouping`)."""

    @property
    def tolerance_ppm(self) -> int:
        """The percent tolerance in parts per million, rounded down (exact integer maths)."""
        return int(self.amount_tolerance_percent * 10_000)
