"""Shared handles a handler may use: settings, database sessions, a job submitter, the
secret box and the SSRF-guarded HTTP clients. One per worker process, made lazily.

The queue appears here only as the `ports` protocols, so nothing below imports kinds
or the queue itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs.clock import utc_now
from settler_jobs.config import Settings
from settler_jobs.errors import ConfigError
from settler_jobs.guarded_http import GuardedHttp1
from settler_jobs.keyring import secret_box
from settler_jobs.net_guard import guarded_client, outbound_policy
from settler_jobs.ports import QueueOps, Submitter
from settler_jobs.secrets_box import SecretBox
from settler_jobs.shared_state import SharedState
from settler_jobs.storage.db import Transactions


@dataclass
class Resources:
    """What handlers share in one process; close with `aclose` when the worker stops."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    submitter: Submitter
    rng: random.Random = field(default_factory=random.Random)
    queue_ops: QueueOps | None = None
    """Set in worker processes (the worker's queue); system jobs need it."""
    shared_state: SharedState | None = None
    """Set in worker processes: the KPI cache and tenant accounting live there."""
    _box: SecretBox | None = field(default=None, repr=False)
    _http: httpx.AsyncClient | None = field(default=None, repr=False)
    _webhook_http: GuardedHttp1 | None = field(default=None, repr=False)
    _transactions: Transactions | None = field(default=None, repr=False)
    _processes: ProcessPoolExecutor | None = field(default=None, repr=False)

    @property
    def secret_box(self) -> SecretBox:
        """The application key's box (ConfigError if no key can be had)."""
        if self._box is None:
            self._box = secret_box(self.settings)
        return self._box

    @property
    def outbound_http(self) -> httpx.AsyncClient:
        """An HTTP client that only reaches addresses the SSRF guard allows."""
        if self._http is None:
            limit = self.settings.webhook_deadline_s
            self._http = guarded_client(
                outbound_policy(self.settings),
                timeout=httpx.Timeout(limit, connect=min(limit, 10.0)),
            )
        return self._http

    @property
    def webhook_http(self) -> GuardedHttp1:
        """The lean keep-alive POST client of webhook deliveries, behind the same guard."""
        if self._webhook_http is None:
            self._webhook_http = GuardedHttp1(outbound_policy(self.settings))
        return self._webhook_http

    @property
    def transactions(self) -> Transactions:
        """Runs short synchronous statement sequences in one transaction (hot paths)."""
        if self._transactions is None:
            self._transactions = Transactions(self.sessions.kw["bind"])
        return self._transactions

    @property
    def process_pool(self) -> ProcessPoolExecutor:
        """Worker processes for CPU-bound work (`SETTLER_CPU_PROCESSES`, default: cores)."""
        if self._processes is None:
            # forkserver: forking a process that runs threads and a loop is unsafe.
            self._processes = ProcessPoolExecutor(
                self.settings.cpu_processes or None,
                mp_context=multiprocessing.get_context("forkserver"),
            )
        return self._processes

    def require_queue_ops(self) -> QueueOps:
        """The queue-wide operations, or ConfigError where none were given."""
        if self.queue_ops is None:
            raise ConfigError("this job needs the queue's own operations (run it in a worker)")
        return self.queue_ops

    def require_shared_state(self) -> SharedState:
        """The shared state, or ConfigError where none was given."""
        if self.shared_state is None:
            raise ConfigError("this job needs the shared state (run it in a worker)")
        return self.shared_state

    def now(self) -> datetime:
        """The current time (UTC)."""
        return utc_now()

    async def aclose(self) -> None:
        """Close the HTTP client, if one was made."""
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
            self._http = None
        if self._webhook_http is not None:
            await self._webhook_http.aclose()
            self._webhook_http = None
        if self._transactions is not None:
            with contextlib.suppress(Exception):
                await self._transactions.aclose()
            self._transactions = None
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
            self._processes = None
