"""Redis Cluster: the cluster-aware client, its primaries, and who owns a key's slot.

With `SETTLER_REDIS_CLUSTER=true`, `REDIS_URL` names any node of the cluster and the
client discovers the rest (CLUSTER SLOTS), follows MOVED/ASK redirections and refreshes
its slot map after a failover. The queue prefix is a hash tag (`{settler}`, BullMQ's
documented way), so every key of the deployment hashes to one slot: bullmq's Lua
scripts, transactions and multi-key reads never cross slots.

The client is redis-py's `redis.asyncio.cluster.RedisCluster`. Everything in this
package is typed against `redis.asyncio.Redis`, and the cluster client answers every
command we use with the same reply shapes; `cluster_client` returns it under that type
so the single-node code paths stay as they are (tests run the paths on a real cluster).
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry

__all__ = ["ClusterNode", "cluster_client", "is_cluster", "primaries", "slot_owner"]


def cluster_client(
    url: str,
    *,
    retry: Retry,
    connect_timeout_s: float,
    socket_timeout_s: float | None,
    max_connections: int,
) -> Redis:
    """A cluster client seeded by `url` (`redis://` or `rediss://`, one node of the cluster).

    `max_connections` applies per node, as with the single-node client per server.
    """
    client = RedisCluster.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        health_check_interval=30,
        max_connections=max_connections,
        retry=retry,
    )
    return cast(Redis, client)


def is_cluster(client: Any) -> bool:
    """True for a cluster client from `cluster_client`."""
    return isinstance(client, RedisCluster)


def _cluster(client: Any) -> RedisCluster:
    if not isinstance(client, RedisCluster):
        raise TypeError(f"not a Redis Cluster client: {type(client).__name__}")
    return client


async def primaries(client: Any, *, refresh: bool = False) -> list[ClusterNode]:
    """The cluster's primaries (connecting first; `refresh` re-reads the slot map)."""
    cluster = _cluster(client)
    if refresh:
        await cluster.nodes_manager.initialize()
    else:
        await cluster.initialize()
    return list(cluster.get_primaries())


async def slot_owner(client: Any, key: str, *, refresh: bool = False) -> ClusterNode:
    """The primary serving `key`'s slot (`refresh` re-reads the slot map first)."""
    cluster = _cluster(client)
    await primaries(cluster, refresh=refresh)
    node = cluster.get_node_from_key(key)
    if node is None:  # pragma: no cover - get_node_from_key raises for uncovered slots
        raise LookupError(f"no node serves the slot of {key!r}")
    return node
