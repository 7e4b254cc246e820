"""The Python API of reconciliations: upload files, define, run, and read results.

Every call is scoped to a tenant (another tenant's id answers `NotFound`). A definition
holds a source and a target (file, SQL or HTTP adapters; their credentials sealed at
rest) and the matching rules; running one enqueues a `reconciliation` job that carries
only the definition id.

    recs = services.reconciliations
    await recs.upload("acme", "charges.csv", Path("charges.csv"))
    definition = await recs.create("acme", "stripe vs bank",
        source={"kind": "file", "format": "csv", "path": "charges.csv"},
        target={"kind": "file", "format": "csv", "path": "bank.csv"},
        rules={"amount_tolerance_minor": 5, "date_window_days": 3})
    submitted = await recs.run("acme", definition.id, tier=Tier.GROWTH)
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.clock import utc_now
from settler_jobs.config import Settings
from settler_jobs.domain import Tier
from settler_jobs.ports import Submitter
from settler_jobs.reconcile import results, store
from settler_jobs.reconcile.execute import tenant_files_root
from settler_jobs.reconcile.specs import MatchRules, SourceSpec
from settler_jobs.records import Submission, Submitted
from settler_jobs.secrets_box import SecretBox

_T = TypeVar("_T")
KIND: Final = "reconciliation"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SPEC: Final[TypeAdapter[Any]] = TypeAdapter(SourceSpec)
_CHUNK: Final = 1 << 20


class Reconciliations:
    """Tenant-scoped reconciliation operations over the database, files and the queue."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        submitter: Submitter,
        box: SecretBox,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._submitter = submitter
        self._box = box

    async def upload(self, tenant_id: str, name: str, content: bytes | Path) -> str:
        """Store a source file for the tenant; returns the path a file source names.

        `name`: 1-128 of letters, digits, '.', '_', '-' (no folders). The file appears
        whole or not at all; an existing file of that name is replaced.
        """
        if not _NAME_RE.fullmatch(name):
            raise errors.InvalidJob(
                f"invalid file name {name!r}: use 1-128 letters, digits, '.', '_' or '-'"
            )
        folder = tenant_files_root(self._settings.files_dir, tenant_id)
        folder.mkdir(parents=True, exist_ok=True)
        limit = self._settings.reconciliation_max_upload_bytes
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_limited(content, out, limit)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, folder / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return name

    async def create(
        self,
        tenant_id: str,
        name: str,
        *,
        source: Mapping[str, Any],
        target: Mapping[str, Any],
        rules: Mapping[str, Any] | None = None,
    ) -> store.Definition:
        """Define a reconciliation (InvalidJob naming the field if a spec is invalid)."""
        source_spec = _valid("source", lambda: _SPEC.validate_python(dict(source)))
        target_spec = _valid("target", lambda: _SPEC.validate_python(dict(target)))
        match_rules = _valid("rules", lambda: MatchRules.model_validate(dict(rules or {})))
        async with self._sessions() as session, session.begin():
            return await store.create_definition(
                session,
                self._box,
                tenant_id=tenant_id,
                name=name,
                source=source_spec,
                target=target_spec,
                rules=match_rules,
                now=utc_now(),
            )

    async def run(
        self,
        tenant_id: str,
        definition_id: str,
        *,
        tier: Tier = Tier.STARTER,
        idempotency_key: str | None = None,
    ) -> Submitted:
        """Enqueue a run of the tenant's definition (NotFound if it is not theirs)."""
        await self.get_definition(tenant_id, definition_id)
        submission = Submission(
            kind=KIND,
            data={"definitionId": definition_id},
            tenant_id=tenant_id,
            tier=tier,
            idempotency_key=idempotency_key,
        )
        return (await self._submitter.submit_bulk([submission]))[0]

    async def list_definitions(self, tenant_id: str) -> list[store.Definition]:
        """The tenant's definitions (secrets shown as ********)."""
        async with self._sessions() as session:
            return await store.list_definitions(session, tenant_id=tenant_id)

    async def get_definition(self, tenant_id: str, definition_id: str) -> store.Definition:
        """One definition (secrets shown as ********)."""
        async with self._sessions() as session:
            return await store.get_definition(session, definition_id, tenant_id=tenant_id)

    async def list_runs(
        self, tenant_id: str, *, definition_id: str | None = None, limit: int = 50
    ) -> list[store.Run]:
        """The tenant's runs, newest first."""
        async with self._sessions() as session:
            return await store.list_runs(
                session, tenant_id=tenant_id, definition_id=definition_id, limit=limit
            )

    async def get_run(self, tenant_id: str, run_id: str) -> store.Run:
        """One run: status, progress, counts, totals per currency, duration."""
        async with self._sessions() as session:
            return await store.get_run(session, run_id, tenant_id=tenant_id)

    async def results(
        self, tenant_id: str, run_id: str, what: str, *, after: int = -1, limit: int = 100
    ) -> results.Page[Any]:
        """A page of `matches`, `discrepancies`, `unmatched-source` or `unmatched-target`."""
        async with self._sessions() as session:
            if what == "matches":
                return await results.list_matches(
                    session, run_id, tenant_id=tenant_id, after=after, limit=limit
                )
            if what == "discrepancies":
                return await results.list_discrepancies(
                    session, run_id, tenant_id=tenant_id, after=after, limit=limit
                )
            if what in ("unmatched-source", "unmatched-target"):
                return await results.list_unmatched(
                    session,
                    run_id,
                    tenant_id=tenant_id,
                    side=what.removeprefix("unmatched-"),
                    after=after,
                    limit=limit,
                )
        raise errors.InvalidJob(
            f"unknown result set {what!r}; use matches, discrepancies, "
            "unmatched-source or unmatched-target"
        )


def _valid(part: str, parse: Callable[[], _T]) -> _T:
    try:
        return parse()
    except ValidationError as exc:
        raise errors.InvalidJob(f"invalid {part} of the reconciliation: {exc}") from None


def _copy_limited(content: bytes | Path, out: Any, limit: int) -> None:
    if isinstance(content, bytes):
        if len(content) > limit:
            raise errors.InvalidJob(f"the file is {len(content)} bytes; the limit is {limit}")
        out.write(content)
        return
    copied = 0
    with content.open("rb") as source:
        while chunk := source.read(_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise errors.InvalidJob(f"the file is over the limit of {limit} bytes")
            out.write(chunk)
