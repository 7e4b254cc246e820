"""The pipelined connection: ordering, script loading, errors and dropped sockets."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError, ResponseError

from settler_jobs.config import Settings
from settler_jobs.queue.pipe import Address, PipelinedConnection


@pytest.fixture
async def pipe(settings: Settings) -> AsyncIterator[PipelinedConnection]:
    assert settings.redis_url is not None
    client = redis.asyncio.from_url(settings.redis_url)
    connection = PipelinedConnection(Address.of(client), name=f"{settings.queue_prefix}:pipe")
    await client.aclose()
    try:
        yield connection
    finally:
        await connection.close()


async def test_many_commands_in_flight_get_their_own_replies_in_order(
    pipe: PipelinedConnection, settings: Settings
) -> None:
    key = f"{settings.queue_prefix}:counter"
    replies = await asyncio.gather(*(pipe.execute("INCR", key) for _ in range(2000)))
    assert replies == list(range(1, 2001))
    assert await pipe.execute("GET", key) == "2000"
    assert pipe.connects == 1


async def test_an_unknown_script_is_loaded_and_run(pipe: PipelinedConnection) -> None:
    script = f"-- {uuid.uuid4().hex}\nreturn {{KEYS[1], ARGV[1]}}"
    sha = hashlib.sha1(script.encode()).hexdigest()
    assert await pipe.evalsha(sha, script, ["k"], [b"\x81v"]) == ["k", "\udc81v"]
    assert await pipe.execute("SCRIPT", "EXISTS", sha) == [1]


async def test_an_error_reply_fails_only_its_command(pipe: PipelinedConnection) -> None:
    results = await asyncio.gather(
        pipe.execute("PING"),
        pipe.execute("NOSUCHCOMMAND"),
        pipe.execute("ECHO", "x"),
        return_exceptions=True,
    )
    assert results[0] == "PONG" and results[2] == "x"
    assert isinstance(results[1], ResponseError)


async def test_a_dropped_socket_fails_commands_in_flight_and_the_next_reconnects(
    pipe: PipelinedConnection, settings: Settings
) -> None:
    await pipe.execute("PING")
    blocked = asyncio.ensure_future(pipe.execute("BLPOP", f"{settings.queue_prefix}:none", 5))
    await asyncio.sleep(0)  # one loop step: the task sends its command (ordering only)
    pipe.drop()
    with pytest.raises(ConnectionError):
        await blocked
    assert await pipe.execute("PING") == "PONG"
    assert pipe.connects == 2
    assert await pipe.execute("CLIENT", "GETNAME") == pipe.name


async def test_a_transaction_runs_whole_with_concurrent_commands_around_it(
    pipe: PipelinedConnection, settings: Settings
) -> None:
    key, other = f"{settings.queue_prefix}:tx", f"{settings.queue_prefix}:other"
    commands = [("RPUSH", key, str(i)) for i in range(50)] + [("LRANGE", key, 0, 1)]
    replies = await asyncio.gather(
        pipe.execute("SET", other, "a"),
        pipe.transaction(commands),
        pipe.transaction([("INCR", other), ("GET", other)]),  # a string: INCR fails inside
    )
    assert replies[0] == "OK"
    assert replies[1] == [*range(1, 51), ["0", "1"]]
    failed, value = replies[2]
    assert str(failed).startswith("ERR value is not an integer") and value == "a"


async def test_a_refused_transaction_raises_the_reason(pipe: PipelinedConnection) -> None:
    with pytest.raises(ResponseError, match="unknown command"):
        await pipe.transaction([("PING",), ("NOSUCHCOMMAND",)])
    assert await pipe.execute("PING") == "PONG"  # the connection is still in order
