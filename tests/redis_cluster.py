"""A real Redis Cluster for tests: three primaries on free loopback ports (and optionally
a replica each).

`RedisClusterNodes.start()` runs `redis-server --cluster-enabled yes` processes in a
folder, joins them with `redis-cli --cluster create` and waits (polling with a deadline)
until every node says `cluster_state:ok`; `stop()` ends the processes it started and
`kill(port)` one of them (SIGKILL), for failover tests.
`migrate_slot` moves one slot, keys included, to another primary, as `redis-cli
--cluster reshard` does, so tests can watch clients follow MOVED.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

PRIMARIES = 3
START_TIMEOUT_S = 20.0
_POLL_S = 0.05


def binaries() -> tuple[str, str] | None:
    """Paths of redis-server and redis-cli, or None when either is missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback whose cluster-bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10_000 < 65_536 and port not in ports and _free(port + 10_000):
            ports.append(port)
    return ports


def _command(client: redis.Redis, *args: str | int) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _until(condition: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g}s")
        time.sleep(_POLL_S)  # the poll interval of a deadline loop


@dataclass
class RedisClusterNodes:
    """Three cluster primaries under `directory`."""

    directory: Path
    server: str
    cli: str
    replicas: int = 0
    ports: list[int] = field(default_factory=list)
    _procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A seed URL (the first node); the client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (close it after use)."""
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    def start(self) -> None:
        self.ports = _free_ports(PRIMARIES * (1 + self.replicas))
        for port in self.ports:
            folder = self.directory / str(port)
            folder.mkdir(parents=True)
            config = folder / "redis.conf"
            config.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        f'dir "{folder}"',
                        "cluster-enabled yes",
                        "cluster-config-file nodes.conf",
                        "cluster-node-timeout 2000",
                        'save ""',
                        "appendonly no",
                        "maxmemory-policy noeviction",
                        "repl-diskless-sync-delay 0",
                        f'logfile "{folder / "redis.log"}"',
                        "",
                    ]
                ),
                encoding="utf-8",
            )
            self._procs[port] = subprocess.Popen([self.server, str(config)])
        for port in self.ports:
            _until(functools.partial(self._pings, port), f"redis-server on port {port}")
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        create = [self.cli, "--cluster", "create", *nodes, "--cluster-yes"]
        result = subprocess.run(
            [*create, "--cluster-replicas", str(self.replicas)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise RuntimeError(f"redis-cli --cluster create failed:\n{output}")
        _until(self._settled, "cluster_state:ok on every node")

    def _pings(self, port: int) -> bool:
        client = self.node(port)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _settled(self) -> bool:
        for port in self.ports:
            client = self.node(port)
            try:
                info = client.cluster("INFO")
                replication = client.info("replication")
            finally:
                client.close()
            known = int(info.get("cluster_known_nodes", 0))
            if info.get("cluster_state") != "ok" or known != len(self.ports):
                return False
            synced = replication.get("master_link_status", "up") == "up"
            if not synced:  # a replica that has not synced could not take over
                return False
        return True

    def kill(self, port: int) -> None:
        """Kill the node on `port` (SIGKILL) and forget it as a live node."""
        proc = self._procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)
        self.ports.remove(port)

    def wait_for_owner_other_than(self, slot: int, port: int, timeout_s: float) -> int:
        """Wait until a live primary other than `port` serves `slot`; its port."""

        def moved() -> bool:
            try:
                return self.owner(slot) != port and self._state_ok()
            except (redis.RedisError, LookupError):
                return False

        _until(moved, f"a failover of slot {slot} away from {port}", timeout_s)
        return self.owner(slot)

    def _state_ok(self) -> bool:
        for port in self.ports:
            client = self.node(port)
            try:
                if client.cluster("INFO").get("cluster_state") != "ok":
                    return False
            finally:
                client.close()
        return True

    def stop(self) -> None:
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()

    def owner(self, slot: int) -> int:
        """The port of the primary serving `slot`."""
        client = self.node(self.ports[0])
        try:
            for start, end, primary, *_ in _command(client, "CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            client.close()
        raise LookupError(f"slot {slot} is not served")

    def migrate_slot(self, slot: int, to_port: int) -> None:
        """Move `slot` and its keys to the primary on `to_port` (CLUSTER SETSLOT + MIGRATE)."""
        from_port = self.owner(slot)
        if from_port == to_port:
            return
        source, target = self.node(from_port), self.node(to_port)
        try:
            source_id, target_id = source.cluster("MYID"), target.cluster("MYID")
            _command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            _command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := _command(source, "CLUSTER", "GETKEYSINSLOT", slot, 500):
                _command(
                    source, "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "REPLACE", "KEYS", *keys
                )
            for port in self.ports:
                client = self.node(port)
                try:
                    _command(client, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
                finally:
                    client.close()
        finally:
            source.close()
            target.close()
        _until(lambda: self._agree(slot, to_port), f"every node routing slot {slot} to {to_port}")

    def _agree(self, slot: int, port: int) -> bool:
        for node_port in self.ports:
            client = self.node(node_port)
            try:
                for start, end, primary, *_ in _command(client, "CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end) and int(primary[1]) != port:
                        return False
            finally:
                client.close()
        return True


def start_cluster(directory: Path, *, replicas: int = 0) -> RedisClusterNodes:
    """Start a three-primary cluster in `directory` (binaries must exist)."""
    found = binaries()
    if found is None:
        raise FileNotFoundError("redis-server / redis-cli not found on PATH")
    nodes = RedisClusterNodes(directory, *found, replicas=replicas)
    try:
        nodes.start()
    except BaseException:
        with contextlib.suppress(Exception):
            nodes.stop()
        raise
    return nodes
