"""Where a lane's pipelined connections go on a Redis Cluster: the primary of its slot.

All of a lane's keys share one slot (the prefix is a hash tag), so both of its sockets
connect to that slot's primary. The first connect uses the client's slot map; every
reconnect (after a drop, a MOVED reply or a failover) re-reads it from the cluster first.
"""

from __future__ import annotations

from redis.asyncio import Redis

from settler_jobs.queue.pipe import Address, Locate
from settler_jobs.redis_cluster import slot_owner


def slot_locator(client: Redis, key: str) -> Locate:
    """A `locate` for `PipelinedConnection`: the address of `key`'s primary, refreshed."""
    connected_before = False

    async def locate() -> Address:
        nonlocal connected_before
        node = await slot_owner(client, key, refresh=connected_before)
        connected_before = True
        # A node's settings hold its host and port plus the client's credentials and TLS.
        return Address.from_kwargs(node.connection_kwargs, node.connection_class)

    return locate
