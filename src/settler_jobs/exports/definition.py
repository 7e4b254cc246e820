"""One exportable dataset: a tenant-scoped table or join with its filters.

A dataset names its columns, the column holding the tenant, a unique order (time, id)
used for keyset pagination, and a pydantic model validating its filters. Every query
carries ``tenant_id = :tenant`` (`Dataset.where`); `rows.stream_rows` reads the rows in
batches. Rows created after the export was requested are left out, so a retried export
writes the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from sqlalchemy import ColumnElement, FromClause

from settler_jobs.errors import InvalidJob
from settler_jobs.storage.tables import UTCDateTime

MAX_FILTERS_BYTES: Final = 2048


class Filters(BaseModel):
    """Filters every dataset accepts: a time window on its time column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


Conditions = Callable[[Any], list[ColumnElement[bool]]]


@dataclass(frozen=True)
class Dataset:
    """One exportable, tenant-scoped table or join."""

    name: str
    description: str
    source: FromClause
    tenant_column: ColumnElement[Any]
    time_column: ColumnElement[Any]
    id_column: ColumnElement[Any]
    columns: tuple[tuple[str, ColumnElement[Any]], ...]
    filters_model: type[Filters] = Filters
    conditions: Conditions = lambda _filters: []

    def __post_init__(self) -> None:
        if not isinstance(self.time_column.type, UTCDateTime):
            raise ValueError(f"dataset {self.name!r}: the time column must be a UTCDateTime")
        self.position(self.time_column)
        self.position(self.id_column)

    def position(self, column: ColumnElement[Any]) -> int:
        """Where `column` is among the columns (a dataset shows its time and id columns)."""
        for i, (_, col) in enumerate(self.columns):
            if col is column:
                return i
        raise ValueError(f"dataset {self.name!r} must show its time and id columns")

    @property
    def headers(self) -> list[str]:
        """Column names, in order."""
        return [name for name, _ in self.columns]

    def parse_filters(self, raw: dict[str, Any] | None) -> Filters:
        """Validated filters; InvalidJob naming the problem."""
        raw = raw or {}
        if len(repr(raw)) > MAX_FILTERS_BYTES:
            raise InvalidJob(f"filters are larger than {MAX_FILTERS_BYTES} bytes")
        try:
            return self.filters_model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'filters'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidJob(f"invalid filters for {self.name}: {problems}") from None

    def where(self, tenant_id: str, filters: Filters, until: datetime) -> list[ColumnElement[bool]]:
        """Every condition of a query: tenant, time window, dataset filters."""
        conds = [self.tenant_column == tenant_id, self.time_column <= until]
        if filters.since is not None:
            conds.append(self.time_column >= filters.since)
        if filters.until is not None:
            conds.append(self.time_column <= filters.until)
        return conds + self.conditions(filters)
