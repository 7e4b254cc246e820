"""Many-to-one: several source records settled by one target record (a daily payout).

Only over records no one-to-one rule paired. The sources left over are grouped by
currency, sign and UTC calendar day; a group of two or more whose total is within the
amount tolerance of one target's amount, dated within the date window of that day,
pairs with it. Groups and targets pair one-to-one, closest first (amount difference,
then date difference, then group, then target position), like the other rules; every
source of a group gets a match row with the same target. Confidence 0.8, less up to 0.25
for the amount difference and 0.2 for the date difference.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from settler_jobs.reconcile import candidates
from settler_jobs.reconcile.specs import MatchRules

CONFIDENCE: Final = 0.8
RULE: Final = "many_to_one"


def many_to_one(sources: pl.DataFrame, targets: pl.DataFrame, rules: MatchRules) -> pl.DataFrame:
    """Rows (s, t, rule, confidence) pairing groups of free `sources` with free `targets`."""
    day = pl.col("ts") // candidates.DAY_US
    groups = (
        sources.filter(pl.col("ts").is_not_null())
        .group_by("currency", day.alias("day"), pl.col("amount").sign().alias("sign"))
        .agg(pl.col("row").sort().alias("rows"), pl.col("amount").sum().alias("total"))
        .filter(pl.col("rows").list.len() >= 2)
        .sort("currency", "day", "sign")
        .with_row_index("row")
        .select(
            pl.col("row").cast(pl.Int64),
            "rows",
            pl.col("total").alias("amount"),
            "currency",
            (pl.col("day") * candidates.DAY_US).alias("ts"),
        )
    )
    pairs = candidates.find(
        groups,
        targets,
        absolute=rules.amount_tolerance_minor,
        ppm=rules.tolerance_ppm,
        window_days=rules.date_window_days,
        limit=rules.max_candidates,
    )
    scored = (
        pairs.join(groups.select(pl.col("row").alias("s"), "amount"), on="s")
        .with_columns(confidence=_confidence(rules))
        .filter(pl.col("confidence") >= rules.min_confidence)
        .sort("da", "dt", "s", "t")
    )
    taken_g: set[int] = set()
    taken_t: set[int] = set()
    picked: list[int] = []
    for i, (g, t) in enumerate(zip(scored["s"].to_list(), scored["t"].to_list(), strict=True)):
        if g not in taken_g and t not in taken_t:
            taken_g.add(g)
            taken_t.add(t)
            picked.append(i)
    return (
        scored[picked]
        .join(groups.select(pl.col("row").alias("s"), "rows"), on="s")
        .explode("rows")
        .select(pl.col("rows").alias("s"), "t", pl.lit(RULE).alias("rule"), "confidence")
    )


def _confidence(rules: MatchRules) -> pl.Expr:
    allowed = candidates.tolerance(
        pl.col("amount"), rules.amount_tolerance_minor, rules.tolerance_ppm
    )
    window_us = (rules.date_window_days or 0) * candidates.DAY_US
    amount_part = pl.when(allowed > 0).then(pl.col("da") / allowed).otherwise(0.0)
    date_part = pl.col("dt") / window_us if window_us else pl.lit(0.0)
    return (CONFIDENCE - 0.25 * amount_part - 0.2 * date_part).clip(0.0, 1.0).round(4)
