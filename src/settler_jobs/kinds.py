"""Job kinds: what a kind is, and the registry that maps queue names to kinds.

A kind is one handler plus its defaults (priority, concurrency, retries, timeout). Its
name is also its BullMQ queue name; enterprise work uses the `<name>-express` lane.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from settler_jobs.domain import PriorityClass, RetryPolicy
from settler_jobs.errors import UnknownJobKind

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from settler_jobs.context import JobContext
    from settler_jobs.ports import Submitter
    from settler_jobs.records import Submitted
    from settler_jobs.resources import Resources

EXPRESS_SUFFIX: Final = "-express"
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,47}$")

AsyncHandler = Callable[[Any, "JobContext"], Awaitable[Any]]
BlockingHandler = Callable[[Any, "JobContext"], Any]
ProcessHandler = Callable[[Any], Any]
PeriodicStep = Callable[["Resources"], Awaitable[float]]
"""Periodic work of a kind: does one round and returns the seconds until the next."""
DeadRetry = Callable[
    [Mapping[str, Any], str, "async_sessionmaker[AsyncSession]", "Submitter"],
    Awaitable["Submitted"],
]
"""How a dead job of a kind is retried, given its data and tenant, when resubmitting the
same data would not do (the webhook delivery opens a new generation instead)."""


class Execution(StrEnum):
    """Where a handler runs: on the event loop, in a thread, or in a worker process."""

    ASYNC = "async"
    THREAD = "thread"
    PROCESS = "process"


@dataclass(frozen=True, slots=True)
class JobKind:
    """One kind of job and its defaults."""

    name: str
    handler: Callable[..., Any]
    payload_model: type[BaseModel] | None = None
    priority: PriorityClass = PriorityClass.NORMAL
    concurrency: int = 5
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 300.0
    execution: Execution = Execution.ASYNC
    description: str = ""
    periodic: tuple[PeriodicStep, ...] = ()
    """Background work run by every worker process serving this kind."""
    retry_dead: DeadRetry | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name) or self.name.endswith(EXPRESS_SUFFIX):
            raise ValueError(
                f"invalid kind name {self.name!r}: lowercase letters, digits and '-', "
                f"not ending in {EXPRESS_SUFFIX!r}"
            )
        if not 1 <= self.concurrency <= 1000:
            raise ValueError("concurrency must be between 1 and 1000")
        if not 0 < self.timeout_s <= 86_400:
            raise ValueError("timeout_s must be in (0, 86400]")

    @property
    def queue(self) -> str:
        """The shared lane's queue name."""
        return self.name

    @property
    def express_queue(self) -> str:
        """The enterprise express lane's queue name."""
        return self.name + EXPRESS_SUFFIX

    def parse_payload(self, payload: Mapping[str, Any]) -> Any:
        """Validate the payload with the kind's model (pydantic errors propagate)."""
        if self.payload_model is None:
            return dict(payload)
        return self.payload_model.model_validate(dict(payload))


class Registry:
    """The job kinds a process knows, by name and by queue."""

    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: JobKind) -> None:
        """Add a kind; a name can be registered once."""
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> JobKind:
        """The kind called `name`, or UnknownJobKind listing the known ones."""
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise UnknownJobKind(f"unknown job kind {name!r}; known kinds: {known}") from None

    def for_queue(self, queue: str) -> JobKind:
        """The kind whose shared or express lane is `queue`."""
        return self.get(queue.removesuffix(EXPRESS_SUFFIX))

    def queues(self) -> list[str]:
        """Every lane of every kind, shared lanes first."""
        kinds = list(self._kinds.values())
        return [k.queue for k in kinds] + [k.express_queue for k in kinds]

    def select(self, names: Iterable[str]) -> Registry:
        """A registry holding only the named kinds (each must exist)."""
        return Registry(self.get(n) for n in names)

    def __iter__(self) -> Iterator[JobKind]:
        return iter(self._kinds.values())

    def __len__(self) -> int:
        return len(self._kinds)

    def __contains__(self, name: object) -> bool:
        return name in self._kinds
