"""Tenants and keys from the CLI, and the API served by `settler-jobs api` and `up`."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.cli_runner import Cli
from tests.helpers import eventually


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tenants_and_keys(cli: Cli) -> None:
    created = cli.json("tenants", "create", "acme", "--tier", "pro", "--name", "Acme")
    assert created == [
        {
            "id": "acme",
            "name": "Acme",
            "tier": "growth",
            "contact": None,
            "created": created[0]["created"],
        }
    ]
    assert cli("tenants", "create", "acme").returncode == 6
    assert cli("tenants", "create", "bad id!").returncode == 4
    assert cli.json("tenants", "set-tier", "acme", "scale")[0]["tier"] == "scale"
    assert cli("tenants", "set-tier", "nobody", "free").returncode == 3
    assert [t["id"] for t in cli.json("tenants", "list")] == ["acme"]
    key = cli.json("keys", "create", "--tenant", "acme", "--name", "ci")
    assert key["key"].startswith(f"sk_live_{key['id']}_")
    listed = cli.ok("keys", "list", "--tenant", "acme")
    assert key["id"] in listed and key["key"].rsplit("_", 1)[1] not in listed
    assert cli("keys", "create", "--tenant", "nobody").returncode == 3
    revoked = cli.json("keys", "revoke", key["id"])
    assert revoked["revoked"] != "-"
    assert cli("keys", "revoke", "nope").returncode == 3


@pytest.fixture
def serving(cli: Cli, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """`settler-jobs <command>` serving the API on a free port; its base URL."""
    port = _free_port()
    command: list[str] = request.param
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "settler_jobs", *command],
        cwd=cli.cwd,
        env=cli.env | {"SETTLER_API_PORT": str(port)},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "server.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


async def _get(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(url)).status_code
    except httpx.TransportError:
        return 0


@pytest.mark.parametrize("serving", [["api"]], indirect=True)
async def test_api_command_serves_and_revocation_is_immediate(cli: Cli, serving: str) -> None:
    cli.ok("tenants", "create", "acme", "--tier", "starter")
    key = cli.json("keys", "create", "--tenant", "acme")
    await eventually(lambda: _get(f"{serving}/healthz"), lambda code: code == 200, timeout_s=45)
    headers = {"Authorization": f"Bearer {key['key']}"}
    async with httpx.AsyncClient(base_url=serving, headers=headers, timeout=10) as http:
        submitted = await http.post("/v1/jobs", json={"kind": "cache-warming"})
        assert submitted.status_code == 201 and submitted.json()["job"]["tier"] == "starter"
        cli.ok("keys", "revoke", key["id"])
        assert (await http.get("/v1/jobs")).status_code == 401
    # No worker runs next to `api`: not ready.
    assert await _get(f"{serving}/readyz") == 503


@pytest.mark.parametrize("serving", [["up", "--kinds", "cache-warming"]], indirect=True)
async def test_up_serves_the_api_next_to_the_workers(serving: str) -> None:
    await eventually(lambda: _get(f"{serving}/readyz"), lambda code: code == 200, timeout_s=45)
