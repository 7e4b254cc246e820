"""`run_reconciliation`: source and target specs in, every result out (sync, CPU-bound).

Meant for a process pool: it touches no database, no event loop of the caller and no
global state, and both its arguments and its `ReconciliationResult` pickle. Memory is
columnar (polars): about 100 bytes per record plus the input's text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from settler_jobs.net_guard import GuardPolicy
from settler_jobs.reconcile.matching import Reason, match
from settler_jobs.reconcile.normalise import REJECT_SCHEMA, normalise
from settler_jobs.reconcile.sources import load_raw
from settler_jobs.reconcile.specs import FileSource, HttpSource, MatchRules, SqlSource

Progress = Callable[[float, str], None]
"""Called with the fraction done (0..1) and the stage name."""
Spec = FileSource | SqlSource | HttpSource

UNMATCHED_COLUMNS: Final = (
    "side",
    "line",
    "external_id",
    "amount",
    "currency",
    "ts",
    "reference",
    "description",
    "reason",
    "detail",
)


@dataclass(frozen=True)
class Summary:
    """Counts and per-currency totals (minor units) of one run."""

    source_records: int
    target_records: int
    matched: int
    discrepancies: int
    unmatched_source: int
    unmatched_target: int
    malformed_source: int
    malformed_target: int
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    """currency -> matched_source, matched_target, unmatched_source, unmatched_target."""
    duration_ms: int = 0


@dataclass(frozen=True)
class ReconciliationResult:
    """Everything a run found; rows in a stable order (source line, then target line)."""

    matches: pl.DataFrame
    """rule, confidence, currency, source_/target_ line, id, amount, ts, reference."""
    discrepancies: pl.DataFrame
    """rule, kind, source_/target_ line, id, currency, amount, ts; difference (t - s)."""
    unmatched: pl.DataFrame
    """`UNMATCHED_COLUMNS`; malformed rows have reason "malformed" and the problem in detail."""
    summary: Summary


def _noop(_fraction: float, _stage: str) -> None:
    return None


def _side(spec: Spec, root: Path, policy: GuardPolicy) -> tuple[pl.DataFrame, pl.DataFrame]:
    raw, unreadable = load_raw(spec, root, policy)
    records, rejects = normalise(raw, spec.mapping)
    if unreadable:
        rejects = pl.concat([pl.DataFrame(unreadable, schema=REJECT_SCHEMA), rejects])
    return records, rejects.sort("line")


def _pairs(frame: pl.DataFrame, src: pl.DataFrame, tgt: pl.DataFrame) -> pl.DataFrame:
    cols = ("line", "id", "amount", "currency", "ts", "reference")

    def prefixed(records: pl.DataFrame, side: str) -> pl.DataFrame:
        renamed = records.select(pl.col("row").alias(side[0]), *cols)
        return renamed.rename({c: f"{side}_{c}" for c in cols})

    joined = frame.join(prefixed(src, "source"), on="s").join(prefixed(tgt, "target"), on="t")
    return joined.drop("s", "t").sort("source_line", "target_line")


def _unmatched(
    side: str, rows: pl.DataFrame, records: pl.DataFrame, rejects: pl.DataFrame
) -> pl.DataFrame:
    left = rows.join(records, on="row").select(
        pl.lit(side).alias("side"),
        "line",
        pl.col("id").alias("external_id"),
        "amount",
        "currency",
        "ts",
        "reference",
        "description",
        "reason",
        pl.lit(None, pl.String).alias("detail"),
    )
    bad = rejects.select(
        pl.lit(side).alias("side"),
        "line",
        pl.col("id").alias("external_id"),
        pl.lit(None, pl.Int64).alias("amount"),
        pl.col("currency"),
        pl.lit(None, pl.Int64).alias("ts"),
        "reference",
        "description",
        pl.lit(Reason.MALFORMED.value).alias("reason"),
        pl.col("reason").alias("detail"),
    )
    return pl.concat([left, bad]).sort("line")


def _totals(matches: pl.DataFrame, unmatched: pl.DataFrame) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    # a many_to_one target appears once per source of its group: count its amount once
    target_amount = pl.col("target_amount").filter(pl.col("target_line").is_first_distinct())
    sums = matches.group_by(pl.col("source_currency").alias("currency")).agg(
        pl.col("source_amount").cast(pl.Int128).sum().alias("matched_source"),
        target_amount.cast(pl.Int128).sum().alias("matched_target"),
    )
    for row in sums.iter_rows(named=True):
        totals.setdefault(row["currency"], {}).update(
            matched_source=int(row["matched_source"]), matched_target=int(row["matched_target"])
        )
    open_items = unmatched.filter(pl.col("amount").is_not_null()).group_by("currency", "side")
    for row in open_items.agg(pl.col("amount").cast(pl.Int128).sum()).iter_rows(named=True):
        totals.setdefault(row["currency"], {})[f"unmatched_{row['side']}"] = int(row["amount"])
    keys = ("matched_source", "matched_target", "unmatched_source", "unmatched_target")
    return {c: {k: totals[c].get(k, 0) for k in keys} for c in sorted(totals)}


def run_reconciliation(
    source: Spec,
    target: Spec,
    rules: MatchRules,
    *,
    files_root: Path,
    policy: GuardPolicy | None = None,
    progress: Progress | None = None,
) -> ReconciliationResult:
    """Read both sides, normalise, match one-to-one and assemble the results.

    File paths (and SQLite sources) resolve inside `files_root`, the tenant's storage;
    HTTP and PostgreSQL sources are reached only where `policy` (default: public
    addresses over https) allows. `progress` is called at each stage.

    Raises `raw.SourceError` when a side cannot be read at all; malformed rows never
    raise, they come back as unmatched items with reason "malformed".
    """
    report = progress or _noop
    started = time.perf_counter()
    report(0.0, "reading source")
    guard = policy or GuardPolicy()
    src, src_rejects = _side(source, files_root, guard)
    report(0.3, "reading target")
    tgt, tgt_rejects = _side(target, files_root, guard)
    report(0.6, "matching")
    result = match(src, tgt, rules)
    report(0.9, "assembling results")
    matches = _pairs(result.matches, src, tgt).rename({"target_currency": "currency"})
    discrepancies = _pairs(result.discrepancies, src, tgt).with_columns(
        difference=pl.when(pl.col("source_currency") == pl.col("target_currency")).then(
            pl.col("target_amount") - pl.col("source_amount")
        )
    )
    unmatched = pl.concat(
        [
            _unmatched("source", result.unmatched_source, src, src_rejects),
            _unmatched("target", result.unmatched_target, tgt, tgt_rejects),
        ]
    )
    totals = _totals(matches, unmatched)
    summary = Summary(
        source_records=src.height + src_rejects.height,
        target_records=tgt.height + tgt_rejects.height,
        matched=matches.height,
        discrepancies=discrepancies.height,
        unmatched_source=unmatched.filter(pl.col("side") == "source").height,
        unmatched_target=unmatched.filter(pl.col("side") == "target").height,
        malformed_source=src_rejects.height,
        malformed_target=tgt_rejects.height,
        totals=totals,
        duration_ms=round((time.perf_counter() - started) * 1000),
    )
    report(1.0, "done")
    return ReconciliationResult(matches.drop("source_currency"), discrepancies, unmatched, summary)
