"""A private PostgreSQL server for tests that stop and restart it (never the shared one).

Built from the Debian server binaries (`/usr/lib/postgresql/<version>/bin`, package
`postgresql`): `initdb` with trust authentication in a temporary folder, `pg_ctl` to start
it on a free local port and to stop it, gently or as a crash (`immediate`: no shutdown
checkpoint, recovery on the next start). The server refuses to run as root, so under root
the folder is handed to the `postgres` system user and the binaries run as that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 30


def server_bin() -> Path | None:
    """The newest installed server's binary folder (with initdb and pg_ctl), if any."""
    found = [b for b in Path("/").glob(BIN_GLOB.lstrip("/")) if os.access(b / "pg_ctl", os.X_OK)]
    found = [b for b in found if b.parent.name.isdigit()]
    return max(found, key=lambda b: int(b.parent.name)) if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """One server in its own folder and port; `start` again after `stop` reuses both."""

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        self._root = Path(tempfile.mkdtemp(prefix="settler-pg-"))
        self._data = self._root / "data"
        self._log = self._root / "server.log"
        self.port = _free_port()
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self._root, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "-A", "trust", "--no-sync")

    @property
    def url(self) -> str:
        """The `postgres` database of this server, as Settler's DATABASE_URL."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        """Start (or restart after a stop) on the same port and data; returns `url`."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._root} "
            "-c fsync=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "start", "-D", str(self._data), "-l", str(self._log), "-w",
            "-t", str(START_TIMEOUT_S), "-o", options,
        )  # fmt: skip
        return self.url

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` is a crash (every backend killed, no checkpoint)."""
        if (self._data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self._data), "-m", mode, "-w")

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        with contextlib.suppress(OSError):
            return self._log.read_text(errors="replace")
        return ""

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self._bin / program), *args],
            cwd=self._root,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=START_TIMEOUT_S + 10,
            **self._as,
        )
