"""Worker processes for the end-to-end tests: start them, read their logs, kill the rest."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from settler_jobs.config import Settings
from tests.e2e.cli_runner import process_env
from tests.e2e.slow_worker import LOG_ENV, MODE_ENV
from tests.helpers import eventually

WORKER_SCRIPT = Path(__file__).resolve().with_name("slow_worker.py")
LOCK_MS = 2000
STALLED_MS = 1000
# Lock expiry, then two stalled checks (mark, then move), then the fetch; with slack.
RECOVERY_S = 20.0


@dataclass
class Worker:
    """One worker process and the file its log lines go to."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def exited(self, timeout_s: float) -> int:
        """Wait (polling) for the process to exit; its exit code."""

        async def poll() -> int | None:
            return self.proc.poll()

        code = await eventually(poll, lambda rc: rc is not None, timeout_s=timeout_s)
        assert code is not None
        return code


class Workers:
    """Starts worker processes for one test and kills whatever is left at the end."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        assert settings.redis_url is not None
        self.journal = tmp_path / "jobs.log"
        self.journal.touch()
        self._dir = tmp_path
        self._started: list[Worker] = []
        self._env = process_env(settings) | {
            "SETTLER_LOCK_DURATION_MS": str(LOCK_MS),
            "SETTLER_STALLED_INTERVAL_MS": str(STALLED_MS),
            "SETTLER_MAX_STALLED_COUNT": "1",
            "SETTLER_SHUTDOWN_GRACE_S": "10",
            LOG_ENV: str(self.journal),
        }

    def start(self, mode: str, **env: str) -> Worker:
        """A worker whose jobs take `mode` ("instant", "hang" or seconds)."""
        log = self._dir / f"worker-{len(self._started)}.stderr"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT)],
                cwd=self._dir,
                env=self._env | {MODE_ENV: mode} | env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = Worker(proc, log)
        self._started.append(worker)
        return worker

    def events(self) -> list[tuple[str, str, int, int]]:
        """(event, job id, pid, attempt) for every line the handlers wrote, in order."""
        out = []
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            event, job_id, pid, attempt = line.split()
            out.append((event, job_id, int(pid), int(attempt)))
        return out

    async def started(self, job_ids: set[str], worker: Worker) -> None:
        """Wait until `worker` has started every one of `job_ids`."""

        async def starts() -> set[str]:
            if worker.proc.poll() is not None:
                pytest.fail(f"worker exited {worker.proc.returncode}:\n{worker.log_text()}")
            return {j for e, j, pid, _ in self.events() if e == "start" and pid == worker.pid}

        await eventually(starts, lambda seen: job_ids <= seen, timeout_s=30)

    def close(self) -> None:
        for worker in self._started:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait(timeout=10)
