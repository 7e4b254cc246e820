"""Candidate pairs for the tolerance rules: same currency, amount and date close enough.

A two-dimensional range query done with sorted arrays: targets are sorted by
(date bucket, amount rank) inside each currency, and every source looks up, for each
bucket its date window can reach, the slice of targets whose amount is within its
tolerance. Exact differences are then checked, and each source keeps its `limit` closest
candidates (amount difference, then date difference, then target position). A slice
holding more than `2 * limit` targets (thousands of equal amounts on one day) is cut to
the targets nearest the source's amount, so work and memory stay bounded.
"""

from __future__ import annotations

import math
from typing import Final

import polars as pl

DAY_US: Final = 86_400_000_000
MAX_BUCKET_OFFSETS: Final = 4
CHUNK_SOURCES: Final = 50_000
CANDIDATE_SCHEMA: Final = {"s": pl.Int64, "t": pl.Int64, "da": pl.Int64, "dt": pl.Int64}
"""Source row, target row, |amount difference|, |date difference| in microseconds."""

_RANK_SHIFT: Final = 2**31


def empty_candidates() -> pl.DataFrame:
    """A candidate frame with no rows."""
    return pl.DataFrame(schema=CANDIDATE_SCHEMA)


def tolerance(amount: pl.Expr, absolute: int, ppm: int) -> pl.Expr:
    """Allowed amount difference for a source amount: the larger of absolute and percent."""
    relative = amount.abs() // 1_000_000 * ppm + amount.abs() % 1_000_000 * ppm // 1_000_000
    return pl.max_horizontal(pl.lit(absolute, pl.Int64), relative)


def find(
    sources: pl.DataFrame,
    targets: pl.DataFrame,
    *,
    absolute: int,
    ppm: int,
    window_days: int | None,
    limit: int,
) -> pl.DataFrame:
    """Pairs (s, t, da, dt) by `CANDIDATE_SCHEMA`; frames hold row, amount, currency, ts.

    With `window_days` None dates are ignored; otherwise records without a date have no
    candidates. Amounts must have the same sign (a refund never pairs with a payment).
    """
    if window_days is not None:
        sources = sources.filter(pl.col("ts").is_not_null())
        targets = targets.filter(pl.col("ts").is_not_null())
    found: list[pl.DataFrame] = []
    for currency in sorted(set(sources["currency"].unique()) & set(targets["currency"])):
        src = sources.filter(pl.col("currency") == currency)
        tgt = targets.filter(pl.col("currency") == currency)
        found.extend(_one_currency(src, tgt, absolute, ppm, window_days, limit))
    return pl.concat(found) if found else empty_candidates()


def _bucket_days(window_days: int | None) -> int:
    if not window_days:
        return 1
    return max(1, math.ceil(window_days / MAX_BUCKET_OFFSETS))


def _one_currency(
    src: pl.DataFrame,
    tgt: pl.DataFrame,
    absolute: int,
    ppm: int,
    window_days: int | None,
    limit: int,
) -> list[pl.DataFrame]:
    width = _bucket_days(window_days) * DAY_US
    bucket = pl.lit(0, pl.Int64) if window_days is None else pl.col("ts") // width
    allowed = tolerance(pl.col("amount"), absolute, ppm)
    src = src.with_columns(
        bucket=bucket, lo=pl.col("amount") - allowed, hi=pl.col("amount") + allowed
    )
    tgt = tgt.with_columns(bucket=bucket)
    # Amount ranks make (bucket, amount) one sortable Int64 key; every value a lookup
    # can use gets a rank, so a rank comparison equals the amount comparison.
    values = pl.concat([tgt["amount"], src["lo"], src["hi"], src["amount"]]).unique().sort()

    def rank(column: pl.Expr) -> pl.Expr:
        return column.map_batches(
            lambda s: values.search_sorted(s, side="left").cast(pl.Int64),
            return_dtype=pl.Int64,
        )

    tgt = tgt.with_columns(key=pl.col("bucket") * _RANK_SHIFT + rank(pl.col("amount"))).sort(
        "key", "row"
    )
    src = src.with_columns(
        r_lo=rank(pl.col("lo")), r_hi=rank(pl.col("hi")), r=rank(pl.col("amount"))
    )
    reach = 0 if window_days is None else math.ceil(window_days / _bucket_days(window_days))
    keys = tgt["key"]
    rows = tgt.select("row", "amount", "ts").with_row_index("idx").cast({"idx": pl.Int64})
    out = []
    for chunk in src.iter_slices(CHUNK_SOURCES):
        per_offset = [
            _closest(_slice_pairs(chunk, keys, offset, limit).join(rows, on="idx"), window_days)
            for offset in range(-reach, reach + 1)
        ]
        out.append(_top(pl.concat(per_offset), limit))
    return out


def _slice_pairs(chunk: pl.DataFrame, keys: pl.Series, offset: int, limit: int) -> pl.DataFrame:
    base = (chunk["bucket"] + offset) * _RANK_SHIFT
    start = keys.search_sorted(base + chunk["r_lo"], side="left").cast(pl.Int64)
    end = keys.search_sorted(base + chunk["r_hi"], side="right").cast(pl.Int64)
    middle = keys.search_sorted(base + chunk["r"], side="left").cast(pl.Int64)
    span = limit
    frame = chunk.select("row", "amount", "ts", "lo", "hi").with_columns(
        start=pl.max_horizontal(start, middle - span), end=pl.min_horizontal(end, middle + span)
    )
    return (
        frame.filter(pl.col("end") > pl.col("start"))
        .select(
            pl.col("row").alias("s"),
            pl.col("amount").alias("s_amount"),
            pl.col("ts").alias("s_ts"),
            "lo",
            "hi",
            pl.int_ranges("start", "end", dtype=pl.Int64).alias("idx"),
        )
        .explode("idx")
    )


def _closest(joined: pl.DataFrame, window_days: int | None) -> pl.DataFrame:
    opposite = pl.col("amount").sign() * pl.col("s_amount").sign() < 0
    keep = pl.col("amount").is_between(pl.col("lo"), pl.col("hi")) & ~opposite
    dt = (pl.col("ts") - pl.col("s_ts")).abs()
    if window_days is not None:
        keep = keep & (dt <= window_days * DAY_US)
    return joined.filter(keep).select(
        "s",
        pl.col("row").alias("t"),
        (pl.col("amount") - pl.col("s_amount")).abs().alias("da"),
        dt.fill_null(0).alias("dt"),
    )


def _top(pairs: pl.DataFrame, limit: int) -> pl.DataFrame:
    return pairs.sort("s", "da", "dt", "t").group_by("s", maintain_order=True).head(limit)
