"""The layering rules of README "Architecture", pinned on the real import graph.

The rules themselves live in `tests/architecture.py`; the last tests prove the checks
bite by adding a bad import to a copy of the package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import architecture

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "settler_jobs"


@pytest.fixture(scope="module")
def graph() -> architecture.Graph:
    return architecture.build(PACKAGE)


def test_the_package_has_no_import_circle(graph: architecture.Graph) -> None:
    assert architecture.circles(graph) == []


def test_every_import_keeps_the_layers(graph: architecture.Graph) -> None:
    assert architecture.forbidden(graph) == []


def test_only_the_queue_package_imports_bullmq(graph: architecture.Graph) -> None:
    importers = architecture.bullmq_importers(graph)
    assert importers, "the adapter must import bullmq"
    assert {architecture.layer(m) for m in importers} == {"queue"}


def test_handlers_and_capabilities_never_reach_a_surface(graph: architecture.Graph) -> None:
    for module, targets in graph.edges.items():
        if architecture.layer(module) in architecture.CAPABILITIES:
            reached = {architecture.layer(t) for t in targets}
            assert not reached & (architecture.SURFACES | architecture.COMPOSITION), module


def _copy_with(tmp_path: Path, module: str, line: str) -> architecture.Graph:
    copy = tmp_path / "settler_jobs"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.ttf"))
    target = copy.joinpath(*module.split(".")).with_suffix(".py")
    target.write_text(target.read_text() + f"\n{line}\n")
    return architecture.build(copy)


def test_an_added_circle_fails_the_check(tmp_path: Path) -> None:
    # envelope is imported by the queue; importing the queue back closes a circle.
    graph = _copy_with(tmp_path, "envelope", "from settler_jobs.queue import JobQueue")
    found = architecture.circles(graph)
    assert any({"settler_jobs.envelope", "settler_jobs.queue"} <= set(c) for c in found)


@pytest.mark.parametrize(
    ("module", "line", "rule"),
    [
        ("domain", "from settler_jobs import metrics", "core imports only core"),
        ("webhooks.send", "from settler_jobs.api import deps", "never import api"),
        ("exports.job", "from settler_jobs.emails.smtp import SmtpProvider", "through its face"),
        ("queue.pipe", "from settler_jobs.webhooks import Webhooks", "import no capability"),
        ("dashboard.web", "from settler_jobs.api import deps", "never imports the API"),
        ("emails.service", "from settler_jobs import wiring", "never import wiring"),
    ],
)
def test_an_added_forbidden_import_fails_the_check(
    tmp_path: Path, module: str, line: str, rule: str
) -> None:
    problems = architecture.forbidden(_copy_with(tmp_path, module, line))
    assert any(p.startswith(f"settler_jobs.{module} ->") and rule in p for p in problems), problems
