"""Running the pinned Node projects of the interop tests: install once, run a script.

Without `node`/`npm` the tests that need them are skipped locally and fail under CI
(`CI=true`), so a CI machine cannot pass them by lacking Node.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest

NPM_INSTALL_TIMEOUT_S: Final = 100.0
NODE_TIMEOUT_S: Final = 30.0


def installed(project: Path) -> Path:
    """`project` with its dependencies installed (`npm install` once if missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are required for the Node BullMQ interop tests"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    if not (project / "node_modules" / "bullmq").is_dir():
        try:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"],
                cwd=project,
                capture_output=True,
                text=True,
                timeout=NPM_INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm install did not finish within {NPM_INSTALL_TIMEOUT_S:g}s")
        if result.returncode != 0:
            pytest.fail(f"npm install failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return project


async def run_node(
    project: Path, script: str, *args: str, timeout_s: float = NODE_TIMEOUT_S
) -> Any:
    """Run a script of the Node project; its stdout parsed as JSON (fails on exit != 0)."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        script,
        *args,
        cwd=project,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node {script} did not finish within {timeout_s:g}s")
    if proc.returncode != 0:
        pytest.fail(
            f"node {script} exited {proc.returncode}\nstdout: {out.decode()[-2000:]}\n"
            f"stderr: {err.decode()[-4000:]}"
        )
    return json.loads(out)
