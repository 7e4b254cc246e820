"""Running the `settler-jobs` CLI as users do: `python -m settler_jobs ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from settler_jobs.config import Settings

CLI_TIMEOUT_S = 60.0


def process_env(settings: Settings) -> dict[str, str]:
    """The environment of a subprocess bound to the test's Redis prefix and database.

    Inherited SETTLER_* and URL variables are dropped so the developer's own never leak in.
    """
    assert settings.redis_url is not None
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SETTLER_") and k not in ("REDIS_URL", "DATABASE_URL")
    }
    env = inherited | {
        "REDIS_URL": settings.redis_url,
        "SETTLER_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "SETTLER_QUEUE_PREFIX": settings.queue_prefix,
        "SETTLER_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.effective_database_url,
        "SETTLER_QUEUE_BACKEND": settings.queue_backend,
        "SETTLER_QUEUE_SCHEMA": settings.queue_schema,
        "SETTLER_METRICS_PORT": "0",
        "SETTLER_API_PORT": "0",
    }
    if settings.secret_key is not None:
        env["SETTLER_SECRET_KEY"] = settings.secret_key.get_secret_value()
    return env


class Cli:
    """Runs `python -m settler_jobs` with the test's environment."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.cwd = tmp_path
        self.env = process_env(settings) | {"COLUMNS": "200"}  # no wrapped help or errors

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "settler_jobs", *args],
            cwd=self.cwd,
            env=self.env | dict(env or {}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    def ok(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """Run a command that must succeed; its stdout."""
        result = self(*args, env=env)
        assert result.returncode == 0, (
            f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def json(self, *args: str, env: Mapping[str, str] | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", env=env))
