"""The LISTEN connection: notifications reach subscribers, and a failure in one
notification's handling does not leave the process deaf to the next ones."""

from __future__ import annotations

import asyncio

import pytest

from settler_jobs.config import Settings
from settler_jobs.queue.pg.listen import CANCEL_CHANNEL, JOBS_CHANNEL, Listener
from settler_jobs.queue.pg.open import queue_pool

pytestmark = pytest.mark.postgres


async def test_a_failing_subscriber_does_not_stop_the_listener(pg_settings: Settings) -> None:
    pool = queue_pool(pg_settings)
    listener = Listener(pool)
    seen: list[str | None] = []
    second = asyncio.Event()

    def fragile(payload: str | None) -> None:
        if payload == "boom":
            raise RuntimeError("a subscriber's bug")

    def record(payload: str | None) -> None:
        seen.append(payload)
        if payload == "after":
            second.set()

    listener.subscribe(JOBS_CHANNEL, fragile)
    listener.subscribe(CANCEL_CHANNEL, record)
    try:
        assert await listener.wait_connected(5)
        async with pool.connection() as conn:
            await conn.execute(f"NOTIFY {JOBS_CHANNEL}, 'boom'".encode())
            # The listener reconnects after the failure; a notification sent while it is
            # away is lost by design (subscribers then get None and look again), so send
            # until one arrives.
            for _ in range(200):
                await conn.execute(f"NOTIFY {CANCEL_CHANNEL}, 'after'".encode())
                try:
                    await asyncio.wait_for(second.wait(), 0.05)  # poll step of a deadline
                    break
                except TimeoutError:
                    continue
        assert second.is_set()
        assert listener.reconnects >= 2  # it did go through a reconnect
    finally:
        await listener.close()
        await pool.close()
