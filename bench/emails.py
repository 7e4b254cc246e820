"""Emails per second through the SMTP provider to a local aiosmtpd server.

(Named `emails.py`: a `bench/email.py` would shadow the standard library's `email`
package, for the script itself and for mypy.)

The SMTP server (aiosmtpd, plain SMTP on loopback) and the producer run in this
process; the worker is the production CLI (`python -m settler_jobs worker --kinds
email-sending`, kind concurrency 5) in another process, on a private Redis and a SQLite
file. Every email is rendered from a template, passes the ledger (claim + sent, two
commits) and is sent by SMTP.

(a) N jobs of 1 recipient: one SMTP connection per job;
(b) N/10 jobs of 10 recipients: one connection per job, reused for its recipients;
(c) the provider alone, in this process: one session sending M emails in a row (no
    queue, no ledger): the ceiling of aiosmtplib + aiosmtpd sharing one event loop.

Jobs are enqueued with the worker stopped; the rate is timed from the first email the
server receives to the N-th (worker start-up excluded).

    python bench/emails.py                     # N=2000, 3 runs
    python bench/emails.py --emails 500 --runs 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.smtp_server import Recorder, smtp_server

import common
from settler_jobs.cli.serve import run
from settler_jobs.config import Settings
from settler_jobs.emails.message import compose, ledger_digest
from settler_jobs.emails.service import send_email
from settler_jobs.emails.smtp import SmtpConfig, SmtpProvider
from settler_jobs.emails.templates import render
from settler_jobs.wiring import open_services

DATA = {"report_name": "Ledger Q3 <final>", "download_url": "https://files.example.com/q3.csv"}


class Worker:
    """The CLI worker for the email kind, in its own process."""

    def __init__(self, settings: Settings, port: int, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLER_")}
        assert settings.redis_url is not None
        env |= {
            "REDIS_URL": settings.redis_url,
            "DATABASE_URL": settings.effective_database_url,
            "SETTLER_QUEUE_PREFIX": settings.queue_prefix,
            "SETTLER_DATA_DIR": str(settings.data_dir),
            "SETTLER_METRICS_PORT": "0",
            "SETTLER_EMAIL_PROVIDER": "smtp",
            "SETTLER_SMTP_HOST": "127.0.0.1",
            "SETTLER_SMTP_PORT": str(port),
            "SETTLER_SMTP_STARTTLS": "false",
            "SETTLER_LOG_LEVEL": "WARNING",
        }
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "settler_jobs", "worker", "--kinds", "email-sending"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _wait(recorder: Recorder, n: int, worker: Worker, timeout_s: float) -> None:
    try:
        await recorder.wait_for(n, timeout=timeout_s)
    except TimeoutError:
        tail = worker.log.read_text()[-3000:]
        raise RuntimeError(
            f"only {len(recorder.received)} of {n} emails arrived:\n{tail}"
        ) from None


async def worker_run(settings: Settings, emails: int, per_job: int, tmp: Path) -> dict[str, float]:
    """(a)/(b): `emails` emails in jobs of `per_job` recipients through one worker process."""
    recorder = Recorder()
    async with (
        open_services(settings, migrate=True) as services,
        smtp_server(recorder=recorder) as server,
    ):
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        for job in range(emails // per_job):
            to = [f"user{job}-{i}@example.com" for i in range(per_job)]
            await send_email(services.queue, tenant, to, "export_ready", DATA)
        worker = Worker(settings, server.port, tmp / f"worker-{per_job}.log")
        try:
            await _wait(recorder, 1, worker, 60)
            cpu0 = worker.cpu_s()
            await _wait(recorder, emails, worker, 900)
            cpu = worker.cpu_s() - cpu0
        finally:
            worker.stop()
    wall = recorder.received[emails - 1].at - recorder.received[0].at
    return {"rate": (emails - 1) / wall, "cpu_ms": 1000 * cpu / (emails - 1)}


async def provider_run(emails: int) -> float:
    """(c): emails/s of one SMTP session in this process (no queue, no ledger)."""
    rendered = render("export_ready", DATA)
    async with smtp_server() as server:
        provider = SmtpProvider(SmtpConfig("127.0.0.1", server.port, starttls=False))
        start = time.perf_counter()
        async with provider.session() as session:
            for i in range(emails):
                to = f"user{i}@example.com"
                await session.send(
                    compose(
                        rendered,
                        sender="Settler <no-reply@example.com>",
                        to=to,
                        digest=ledger_digest("bench", "k", to),
                        date=datetime.now(UTC),
                    )
                )
        await server.recorder.wait_for(emails)
        return emails / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_redis_args(parser)
    parser.add_argument("--emails", type=int, default=2000, help="emails per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with common.redis_for(args) as url:
        print(common.machine(url))
        rows = []
        for per_job in (1, 10):
            for run_no in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp, common.scoped_prefix(url, "mail") as p:
                    s = common.settings(url, p, Path(tmp) / "data")
                    result = run(worker_run(s, args.emails, per_job, Path(tmp)))
                rows.append([per_job, run_no + 1, args.emails, result["rate"], result["cpu_ms"]])
        common.table(
            "(a, b) emails/s, one worker process (concurrency 5) -> local aiosmtpd",
            ["recipients/job", "run", "emails", "emails/s", "worker CPU ms/email"],
            rows,
        )
        rates = [run(provider_run(args.emails)) for _ in range(args.runs)]
        common.table(
            "(c) SMTP provider alone, one session, in-process with aiosmtpd",
            ["runs", "emails", "median emails/s", "min", "max"],
            [[args.runs, args.emails, common.median(rates), min(rates), max(rates)]],
        )
        print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
