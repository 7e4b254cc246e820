"""Reconciliation end to end: N source x N target CSV rows, wall time, records/s, peak RSS.

Generates two CSV files in a temporary folder (not timed): half of the pairs share an
external id and amount, 40 % differ in id, amount (up to 3 minor units) and date (up to
2 days) and must be found by the tolerance rule, 10 % have no partner. Five currencies
(USD, EUR, GBP, JPY, KWD), about 1 % refunds, target rows shuffled. Then a fresh child
process runs `run_reconciliation` on them; its wall time and peak RSS are reported.

    python bench/reconcile.py                  # 1,000,000 x 1,000,000, 3 runs
    python bench/reconcile.py --records 100000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from settler_jobs.reconcile import FileSource, MatchRules, run_reconciliation

CURRENCIES = ("USD", "EUR", "GBP", "JPY", "KWD")
DIGITS = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "KWD": 3}
RULES = MatchRules(amount_tolerance_minor=5, date_window_days=3)
EPOCH_DAY = 20454  # 2026-01-01


def _random(n: int, seed: int) -> pl.Expr:
    return pl.int_range(n, dtype=pl.UInt64).hash(seed)


def _decimal_text(minor: pl.Expr, currency: pl.Expr) -> pl.Expr:
    whole, sign = minor.abs(), pl.when(minor < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    text = pl.lit(None, pl.String)
    for code, digits in DIGITS.items():
        scale = 10**digits
        body = (whole // scale).cast(pl.String)
        if digits:
            fraction = (whole % scale).cast(pl.String).str.zfill(digits)
            body = body + pl.lit(".") + fraction
        text = pl.when(currency == code).then(sign + body).otherwise(text)
    return text


def generate(n: int, folder: Path) -> None:
    """Write source.csv and target.csv with the mix described in the module docstring."""
    kind = pl.int_range(n) % 10
    base = pl.DataFrame({"i": pl.int_range(n, eager=True)}).with_columns(
        currency=pl.lit(pl.Series(CURRENCIES)).get((_random(n, 1) % 5).cast(pl.Int64)),
        minor=(_random(n, 2) % 5_000_000).cast(pl.Int64)
        * pl.when(_random(n, 3) % 100 == 0).then(-1).otherwise(1),
        day=(_random(n, 4) % 365).cast(pl.Int32) + EPOCH_DAY,
        kind=kind,
    )
    source = base.select(
        pl.format("S{}", "i").alias("id"),
        _decimal_text(pl.col("minor"), pl.col("currency")).alias("amount"),
        "currency",
        pl.col("day").cast(pl.Date).alias("date"),
        pl.format("payment {}", "i").alias("description"),
        pl.format("REF-{}", "i").alias("reference"),
    )
    shift = (_random(n, 5) % 7).cast(pl.Int64) - 3
    t_minor = (
        pl.when(pl.col("kind") < 5)
        .then(pl.col("minor"))
        .when(pl.col("kind") < 9)
        .then(pl.col("minor") + shift)
        .otherwise(pl.col("minor") + 7_000_000)
    )
    t_day = (
        pl.when(pl.col("kind") < 5)
        .then(pl.col("day"))
        .otherwise(pl.col("day") + (_random(n, 6) % 3).cast(pl.Int32))
    )
    target = base.select(
        pl.when(pl.col("kind") < 5)
        .then(pl.format("S{}", "i"))
        .otherwise(pl.format("T{}", "i"))
        .alias("id"),
        _decimal_text(t_minor, pl.col("currency")).alias("amount"),
        "currency",
        t_day.cast(pl.Date).alias("date"),
        pl.format("transfer {}", "i").alias("description"),
        pl.lit(None, pl.String).alias("reference"),
        _random(n, 7).alias("shuffle"),
    ).sort("shuffle")
    source.write_csv(folder / "source.csv")
    target.drop("shuffle").write_csv(folder / "target.csv")


def child(folder: Path) -> None:
    """Run one reconciliation and print its figures as JSON (runs in a fresh process)."""
    started = time.perf_counter()
    result = run_reconciliation(
        FileSource(format="csv", path="source.csv"),
        FileSource(format="csv", path="target.csv"),
        RULES,
        files_root=folder,
    )
    wall = time.perf_counter() - started
    rules = result.matches.group_by("rule").len().sort("rule").rows()
    summary = result.summary
    figures = {
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "matched": summary.matched,
        "by_rule": dict(rules),
        "discrepancies": summary.discrepancies,
        "unmatched_source": summary.unmatched_source,
        "unmatched_target": summary.unmatched_target,
    }
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="rows per side")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    with tempfile.TemporaryDirectory(prefix="settler-recon-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        generate(args.records, folder)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        print(
            f"generated 2 x {args.records:,} rows ({size:.0f} MiB CSV) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        print("| run | load (1 min) | wall s | records/s | peak RSS MiB | matched (by rule) |")
        print("|---|---|---|---|---|---|")
        for run in range(1, args.runs + 1):
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, "--child", str(folder)]
            out = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
            rate = 2 * args.records / out["wall_s"]
            print(
                f"| {run} | {load:.2f} | {out['wall_s']:.2f} | {rate:,.0f} | "
                f"{out['peak_rss_mb']:,.0f} | {out['matched']:,} {out['by_rule']} |"
            )
        print(
            f"unmatched source/target: {out['unmatched_source']:,}/{out['unmatched_target']:,},"
            f" discrepancies: {out['discrepancies']:,}"
        )


if __name__ == "__main__":
    main()
