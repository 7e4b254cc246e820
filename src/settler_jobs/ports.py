"""The queue as the layers below it see it: protocols only, no implementation.

`JobQueue` satisfies them; handlers, resources and kinds import these instead of the
queue (or the registry), which keeps the kernel free of import circles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from settler_jobs.domain import JobState
    from settler_jobs.records import BacklogScan, JobRecord, Submission, Submitted


class LaneNames(Protocol):
    """Names the BullMQ queue of every lane (what retention and cleanup walk)."""

    def queues(self) -> list[str]: ...


class Submitter(Protocol):
    """The producer side of the queue, as handlers see it."""

    async def submit_bulk(self, subs: list[Submission]) -> list[Submitted]: ...

    async def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord: ...


class SqlRun(Protocol):
    """Runs one statement (`:name` parameters) in the caller's open transaction."""

    async def __call__(
        self, sql: str, params: Mapping[str, Any]
    ) -> Sequence[Mapping[str, Any]]: ...


@runtime_checkable
class TransactionalSubmitter(Protocol):
    """A queue that can add jobs inside the caller's database transaction.

    Only the PostgreSQL queue, whose tables live in the application database: the jobs
    commit or roll back with the caller's rows. Capabilities check for it at run time.
    """

    async def submit_in(self, run: SqlRun, subs: Sequence[Submission]) -> list[Submitted]: ...


class QueueCleanup(Protocol):
    """Queue-wide reads and cleanup for system jobs (retention), on either backend."""

    @property
    def registry(self) -> LaneNames: ...

    async def tenant_backlog(self, *, per_lane: int = 1000) -> BacklogScan: ...

    async def finished_before(self, queue: str, state: JobState, older_than_s: int) -> int: ...

    async def clean_finished(
        self, queue: str, state: JobState, older_than_s: int, limit: int
    ) -> int: ...


class QueueOps(QueueCleanup, Protocol):
    """`QueueCleanup` plus the key prefix the KPI cache names its entries under."""

    @property
    def key_prefix(self) -> str: ...
