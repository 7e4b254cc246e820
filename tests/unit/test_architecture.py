"""Import rules: bullmq stays behind the adapter; handlers never reach up into the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "settler_jobs"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_adapter_imports_bullmq() -> None:
    importers = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if any(n == "bullmq" or n.startswith("bullmq.") for n in _imports(p))
    }
    # The adapter is the `queue` package: JobQueue and LaneWorker, and its lane loop.
    assert importers
    assert all(p.startswith("queue/") for p in importers), importers


def test_handlers_do_not_import_the_runtime_or_cli() -> None:
    forbidden = (
        "settler_jobs.worker.runtime",
        "settler_jobs.cli.main",
        "settler_jobs.worker.runner",
        "settler_jobs.queue",
    )
    for path in (PACKAGE / "handlers").rglob("*.py"):
        assert not any(n.startswith(forbidden) for n in _imports(path)), path
