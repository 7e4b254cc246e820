"""Reconciliation definitions and runs over an `AsyncSession` (never committing).

Every read is tenant-scoped: another tenant's id answers `NotFound`. Adapter secrets are
sealed with `SecretBox` (context ``reconciliation-definition:<id>:<side>``) and only
`reveal_specs` opens them, for the job that runs the reconciliation. A run's results
are written and paged by `reconcile.results`. Functions taking a run id without a tenant
(`start_run`, `record_progress`, `fail_run`) are for the job, which got the id from
`ensure_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from settler_jobs import errors
from settler_jobs.domain import validate_tenant_id
from settler_jobs.reconcile.specs import (
    SECRET_FIELDS,
    FileSource,
    HttpSource,
    MatchRules,
    SourceSpec,
    SqlSource,
)
from settler_jobs.secrets_box import SecretBox
from settler_jobs.storage.reconcile_tables import (
    ReconciliationDefinitionRow,
    ReconciliationRunRow,
    new_id,
)

MAX_PAGE: Final = 1000
MAX_ERROR: Final = 2000
SECRET_SHOWN: Final = "********"
_SPEC: Final[TypeAdapter[FileSource | SqlSource | HttpSource]] = TypeAdapter(SourceSpec)
Spec = FileSource | SqlSource | HttpSource


@dataclass(frozen=True)
class Definition:
    """A definition as shown to its tenant: secret fields replaced by `SECRET_SHOWN`."""

    id: str
    tenant_id: str
    name: str
    source: dict[str, Any]
    target: dict[str, Any]
    rules: MatchRules
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Run:
    """A run's status, progress, counts and per-currency totals (minor units)."""

    id: str
    tenant_id: str
    definition_id: str
    job_id: str | None
    status: str
    progress: float
    stage: str
    source_records: int
    target_records: int
    matched: int
    discrepancies: int
    unmatched_source: int
    unmatched_target: int
    malformed_source: int
    malformed_target: int
    totals: dict[str, Any] | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    created_at: datetime


def _context(definition_id: str, side: str) -> str:
    return f"reconciliation-definition:{definition_id}:{side}"


def _split(spec: Spec) -> tuple[dict[str, Any], dict[str, Any]]:
    data = spec.model_dump(mode="json")
    secret_names = SECRET_FIELDS[data["kind"]]
    return (
        {k: v for k, v in data.items() if k not in secret_names},
        {k: data[k] for k in secret_names},
    )


def _shown(config: dict[str, Any]) -> dict[str, Any]:
    shown = dict(config)
    for name in SECRET_FIELDS[config["kind"]]:
        shown[name] = SECRET_SHOWN
    return shown


def _to_definition(row: ReconciliationDefinitionRow) -> Definition:
    return Definition(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        source=_shown(row.source_config),
        target=_shown(row.target_config),
        rules=MatchRules.model_validate(row.rules),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def to_run(row: ReconciliationRunRow) -> Run:
    """The value of a run row."""
    names = Run.__dataclass_fields__
    return Run(**{name: getattr(row, name) for name in names})


async def create_definition(
    session: AsyncSession,
    box: SecretBox,
    *,
    tenant_id: str,
    name: str,
    source: Spec,
    target: Spec,
    rules: MatchRules,
    now: datetime,
) -> Definition:
    """Store a definition, sealing each side's secret fields; InvalidState if the name is taken."""
    validate_tenant_id(tenant_id)
    if not name.strip() or len(name) > 200:
        raise ValueError("a definition name must be 1-200 characters")
    definition_id = new_id()
    row = ReconciliationDefinitionRow(
        id=definition_id,
        tenant_id=tenant_id,
        name=name,
        rules=rules.model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )
    for side, spec in (("source", source), ("target", target)):
        config, secret = _split(_SPEC.validate_python(spec))
        sealed = box.encrypt(json.dumps(secret), context=_context(definition_id, side))
        setattr(row, f"{side}_config", config)
        setattr(row, f"{side}_secret", sealed if secret else None)
    taken = await session.scalar(
        select(ReconciliationDefinitionRow.id).where(
            ReconciliationDefinitionRow.tenant_id == tenant_id,
            ReconciliationDefinitionRow.name == name,
        )
    )
    if taken is not None:
        raise errors.InvalidState(f"a reconciliation named {name!r} already exists")
    session.add(row)
    await session.flush()
    return _to_definition(row)


async def _definition_row(
    session: AsyncSession, definition_id: str, tenant_id: str
) -> ReconciliationDefinitionRow:
    row = await session.scalar(
        select(ReconciliationDefinitionRow).where(
            ReconciliationDefinitionRow.id == definition_id,
            ReconciliationDefinitionRow.tenant_id == tenant_id,
        )
    )
    if row is None:
        raise errors.NotFound(f"no reconciliation definition {definition_id!r}")
    return row


async def get_definition(
    session: AsyncSession, definition_id: str, *, tenant_id: str
) -> Definition:
    """The tenant's definition (secrets hidden); NotFound otherwise."""
    return _to_definition(await _definition_row(session, definition_id, tenant_id))


async def list_definitions(session: AsyncSession, *, tenant_id: str) -> list[Definition]:
    """The tenant's definitions by name."""
    rows = await session.scalars(
        select(ReconciliationDefinitionRow)
        .where(ReconciliationDefinitionRow.tenant_id == tenant_id)
        .order_by(ReconciliationDefinitionRow.name)
    )
    return [_to_definition(row) for row in rows]


async def reveal_specs(
    session: AsyncSession, box: SecretBox, definition_id: str, *, tenant_id: str
) -> tuple[Spec, Spec, MatchRules]:
    """Source and target specs with their secrets, and the rules: for the job only."""
    row = await _definition_row(session, definition_id, tenant_id)
    specs = []
    for side in ("source", "target"):
        data = dict(getattr(row, f"{side}_config"))
        sealed = getattr(row, f"{side}_secret")
        if sealed is not None:
            data |= json.loads(box.decrypt(sealed, context=_context(definition_id, side)))
        specs.append(_SPEC.validate_python(data))
    return specs[0], specs[1], MatchRules.model_validate(row.rules)


async def ensure_run(
    session: AsyncSession,
    *,
    tenant_id: str,
    definition_id: str,
    job_id: str | None,
    now: datetime,
) -> Run:
    """The run of (tenant, job), created pending if new: a retried job reuses its run."""
    await _definition_row(session, definition_id, tenant_id)
    if job_id is not None:
        existing = await session.scalar(
            select(ReconciliationRunRow).where(
                ReconciliationRunRow.tenant_id == tenant_id, ReconciliationRunRow.job_id == job_id
            )
        )
        if existing is not None:
            return to_run(existing)
    row = ReconciliationRunRow(
        id=new_id(),
        tenant_id=tenant_id,
        definition_id=definition_id,
        job_id=job_id,
        status="pending",
        progress=0.0,
        stage="",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return to_run(row)


async def run_row(
    session: AsyncSession, run_id: str, tenant_id: str | None
) -> ReconciliationRunRow:
    """The run row `run_id` (of `tenant_id`, if given); NotFound otherwise."""
    stmt = select(ReconciliationRunRow).where(ReconciliationRunRow.id == run_id)
    if tenant_id is not None:
        stmt = stmt.where(ReconciliationRunRow.tenant_id == tenant_id)
    row = await session.scalar(stmt)
    if row is None:
        raise errors.NotFound(f"no reconciliation run {run_id!r}")
    return row


async def get_run(session: AsyncSession, run_id: str, *, tenant_id: str) -> Run:
    """The tenant's run; NotFound otherwise."""
    return to_run(await run_row(session, run_id, tenant_id))


async def list_runs(
    session: AsyncSession, *, tenant_id: str, definition_id: str | None = None, limit: int = 50
) -> list[Run]:
    """The tenant's newest runs first (of one definition, if given)."""
    stmt = select(ReconciliationRunRow).where(ReconciliationRunRow.tenant_id == tenant_id)
    if definition_id is not None:
        stmt = stmt.where(ReconciliationRunRow.definition_id == definition_id)
    order = (ReconciliationRunRow.created_at.desc(), ReconciliationRunRow.id)
    rows = await session.scalars(stmt.order_by(*order).limit(max(1, min(limit, MAX_PAGE))))
    return [to_run(row) for row in rows]


async def start_run(session: AsyncSession, run_id: str, *, now: datetime) -> None:
    """Mark the run running from the start (also on a retry: progress and error reset)."""
    row = await run_row(session, run_id, None)
    row.status, row.progress, row.stage, row.error = "running", 0.0, "starting", None
    row.started_at, row.finished_at, row.updated_at = now, None, now
    await session.flush()


async def record_progress(
    session: AsyncSession, run_id: str, fraction: float, stage: str, *, now: datetime
) -> None:
    """Store the run's progress (0..1) and stage name."""
    row = await run_row(session, run_id, None)
    row.progress, row.stage, row.updated_at = max(0.0, min(1.0, fraction)), stage[:64], now
    await session.flush()


async def fail_run(session: AsyncSession, run_id: str, error: str, *, now: datetime) -> None:
    """Mark the run failed with `error` (its earlier results, if any, stay)."""
    row = await run_row(session, run_id, None)
    row.status, row.error, row.finished_at, row.updated_at = "failed", error[:MAX_ERROR], now, now
    if row.started_at is not None:
        row.duration_ms = round((now - row.started_at).total_seconds() * 1000)
    await session.flush()
