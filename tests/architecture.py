"""The package's import graph and the layering rules it must keep (see README "Architecture").

Every import counts: module level, inside functions and under TYPE_CHECKING. Importing
`settler_jobs.a.b` also runs `settler_jobs/a/__init__.py`, so an edge goes to the target
and to each of its packages, except the importer's own packages (already importing).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = "settler_jobs"
CORE: Final = frozenset(
    {"config", "errors", "domain", "records", "envelope", "addresses", "clock", "redaction"}
)
"""Pure rules and values: import nothing of ours but each other."""
KERNEL: Final = frozenset(
    {
        "audit",
        "context",
        "guarded_http",
        "heartbeat",
        "http1_wire",
        "keyring",
        "kinds",
        "logs",
        "metrics",
        "net_guard",
        "ports",
        "redis_cluster",
        "redis_server",
        "resources",
        "secrets_box",
        "shared_state",
    }
)
"""What every capability may use: handler context, shared handles, connections, keys."""
CAPABILITIES: Final = frozenset(
    {
        "alerts",
        "dlq",
        "emails",
        "exports",
        "reconcile",
        "retention",
        "scheduling",
        "tenants",
        "webhooks",
        "worker",
    }
)
ENGINES: Final = frozenset({"storage", "queue"})
"""The database and the BullMQ adapter: below every capability, above the kernel."""
SURFACES: Final = frozenset({"api", "dashboard", "cli", "__main__"})
COMPOSITION: Final = frozenset({"registry", "wiring"})
"""Build the kinds and the services from every capability; only surfaces import them."""
ROOT_MODULES: Final = frozenset({"__init__", "migrations"})


@dataclass(frozen=True)
class Graph:
    """Module -> modules it imports (ours only, dotted names)."""

    edges: dict[str, set[str]]
    external: dict[str, set[str]]
    """Module -> top-level names of third-party imports."""


def module_name(package_dir: Path, path: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split(".")
    for end in range(2, len(parts)):
        yield ".".join(parts[:end])


def build(package_dir: Path) -> Graph:
    """The import graph of the package whose directory is `package_dir`."""
    files = {module_name(package_dir, p): p for p in package_dir.rglob("*.py")}
    files = {name: p for name, p in files.items() if ".migrations." not in f".{name}."}
    edges: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        outside: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _resolve(name, is_package, node)
                found = [module]
                found += [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in files]
            for target in found:
                if target == ROOT or target.startswith(f"{ROOT}."):
                    targets.add(target)
                else:
                    outside.add(target.split(".")[0])
        own = {name, *_ancestors(name)} | ({name} if is_package else set())
        closed = {t for t in targets if t in files}
        closed |= {a for t in closed for a in _ancestors(t)}
        edges[name] = closed - own - {ROOT}
        external[name] = outside
    return Graph(edges, external)


def circles(graph: Graph) -> list[list[str]]:
    """Every strongly connected set of two or more modules (or a module importing itself)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is ~150 modules deep at most
        order[node] = low[node] = len(order)
        stack.append(node)
        for child in sorted(graph.edges[node] & graph.edges.keys()):
            if child not in order:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], order[child])
        if low[node] == order[node]:
            members = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(members) > 1 or node in graph.edges[node]:
                found.append(sorted(members))

    for module in sorted(graph.edges):
        if module not in order:
            visit(module)
    return found


def layer(module: str) -> str:
    """The first name under the root package: `webhooks` for settler_jobs.webhooks.send."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _allowed(importer: str, target: str) -> str | None:
    """Why `importer` may not import `target`, or None when it may."""
    src, dst = layer(importer), layer(target)
    if src == dst:
        return None
    if src in CORE:
        return None if dst in CORE else "core imports only core"
    if src in KERNEL:
        return None if dst in CORE | KERNEL | ENGINES else "the kernel imports core and engines"
    if src in ENGINES:
        if dst in CORE | KERNEL | ENGINES:
            return None
        return "storage and queue import no capability"
    if src in CAPABILITIES:
        if dst in CORE | KERNEL | ENGINES:
            return None
        if dst in CAPABILITIES:
            face = f"{ROOT}.{dst}"
            return None if target == face else f"reach {dst} through its face ({face})"
        return f"capabilities never import {dst}"
    if src in COMPOSITION:
        return None if dst not in SURFACES else "composition never imports a surface"
    if src == "dashboard" and dst in {"api", "cli"}:
        return "the dashboard never imports the API or the CLI"
    if src == "api" and dst == "cli":
        return "the API never imports the CLI"
    return None


def forbidden(graph: Graph) -> list[str]:
    """Every import that breaks a layering rule, as 'importer -> target: rule'."""
    problems = []
    for importer, targets in sorted(graph.edges.items()):
        if layer(importer) not in CORE | KERNEL | ENGINES | CAPABILITIES | SURFACES | COMPOSITION:
            if layer(importer) not in ROOT_MODULES:
                problems.append(f"{importer}: not in any layer (add it to tests/architecture.py)")
            continue
        for target in sorted(targets):
            reason = _allowed(importer, target)
            if reason:
                problems.append(f"{importer} -> {target}: {reason}")
    return problems


def bullmq_importers(graph: Graph) -> set[str]:
    """Modules that import bullmq."""
    return {name for name, outside in graph.external.items() if "bullmq" in outside}
