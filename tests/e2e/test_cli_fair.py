"""The CLI and backlog quotas: exit code 8 on refusal, `status --tenant` usage."""

from __future__ import annotations

import json

from tests.e2e.cli_runner import Cli

QUOTA_EXCEEDED_EXIT = 8
QUOTAS = {"SETTLER_TENANT_BACKLOG_QUOTAS": json.dumps({"free": 2})}


def _submit(n: int) -> list[str]:
    args = ("submit", "reconciliation", "--tenant", "acme", "--tier", "free")
    return [*args, "--data", json.dumps({"definitionId": f"d{n}"})]


def test_a_tenant_over_its_quota_gets_exit_8_and_status_shows_its_use(cli: Cli) -> None:
    cli.ok("tenants", "create", "acme", "--tier", "free")
    for n in range(2):
        cli.ok(*_submit(n), env=QUOTAS)
    refused = cli(*_submit(2), env=QUOTAS)
    assert refused.returncode == QUOTA_EXCEEDED_EXIT
    assert "quota of 2" in refused.stderr and "nothing was enqueued" in refused.stderr
    assert "Traceback" not in refused.stderr
    usage = cli.json("status", "--tenant", "acme", env=QUOTAS)
    assert (usage["tenant_id"], usage["tier"]) == ("acme", "free")
    assert (usage["waiting"], usage["quota"], usage["active"]) == (2, 2, 0)
    lanes = {lane["queue"]: lane for lane in usage["lanes"]}
    assert lanes["reconciliation"]["waiting"] == 2
    table = cli.ok("status", "--tenant", "acme", env=QUOTAS)
    assert "waiting 2 of quota 2" in table and "reconciliation" in table
    unknown = cli("status", "--tenant", "nobody")
    assert unknown.returncode == 3  # NotFound
