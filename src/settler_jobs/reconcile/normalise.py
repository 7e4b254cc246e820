"""Raw rows (every field text) to normalised records, or to rejects with line and reason.

Rules, chosen so that money is never changed silently:

* Amounts are exact integer minor units of their currency, parsed from decimal text
  (``[+-]digits[.digits]``, at most 14 integer digits). A fraction longer than the
  currency allows is *refused*, not rounded ("1.234 USD"), unless the extra digits are
  zeros ("1.230 USD" is 123). Negative amounts (refunds, reversals) are allowed.
  Exponents, thousands separators and floats' binary noise are refused.
* Currencies are trimmed and upper-cased ISO 4217 codes with a known minor unit, or the
  mapping's `default_currency` when the column is absent or empty.
* Dates are ``YYYY-MM-DD`` (midnight in the mapping's time zone) or ISO 8601 timestamps
  (``T`` or space, optional fraction, ``Z`` or ``±HH:MM``; no offset: the mapping's time
  zone), stored as UTC microseconds. A missing date is allowed (such a record can only
  match on id or reference); an unparseable one rejects the row.
* Ids are trimmed (case kept); references are trimmed, upper-cased, with inner white
  space removed ("inv 2024 01" equals "INV202401"). Empty text counts as missing.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from settler_jobs.reconcile.currencies import MAX_MINOR_UNITS, MINOR_UNITS
from settler_jobs.reconcile.specs import FieldMapping

FIELDS: Final = ("id", "amount", "currency", "date", "description", "reference")
"""The canonical text columns a raw frame has, besides ``line``."""
MAX_INTEGER_DIGITS: Final = 14
RECORD_SCHEMA: Final = pl.Schema(
    {
        "row": pl.Int64,
        "line": pl.Int64,
        "id": pl.String,
        "amount": pl.Int64,
        "currency": pl.String,
        "ts": pl.Int64,
        "description": pl.String,
        "reference": pl.String,
    }
)
"""A normalised record; `row` is its 0-based position among the side's good records."""
REJECT_SCHEMA: Final = pl.Schema(
    {"line": pl.Int64, "reason": pl.String, **{f: pl.String for f in FIELDS}}
)

_AMOUNT_RE: Final = r"^([+-]?)(\d+)(?:\.(\d+))?$"
_OFFSET_FORMATS: Final = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_NAIVE_FORMATS: Final = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")
_DIVISOR: Final = {d: 10 ** (MAX_MINOR_UNITS - d) for d in range(MAX_MINOR_UNITS + 1)}


def empty_raw() -> pl.DataFrame:
    """A raw frame with no rows."""
    return pl.DataFrame(schema={"line": pl.Int64, **{f: pl.String for f in FIELDS}})


def _text(name: str) -> pl.Expr:
    value = pl.col(name).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value)


def _micros(expr: pl.Expr) -> pl.Expr:
    return expr.dt.convert_time_zone("UTC").dt.epoch("us")


def _timestamp(mapping: FieldMapping) -> pl.Expr:
    """UTC microseconds of the date column, null if missing or unparseable."""
    zone = mapping.timezone
    text = _text("date")
    if mapping.date_format is not None:
        fmt = mapping.date_format
        if "%z" in fmt or "%:z" in fmt:
            return _micros(text.str.to_datetime(fmt, strict=False, time_unit="us"))
        naive = text.str.to_datetime(fmt, strict=False, time_unit="us")
        return _micros(naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null"))
    iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T").str.replace(r"Z$", "+00:00")
    day = iso.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us"))
    candidates = [
        _micros(day.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null"))
    ]
    for fmt in _OFFSET_FORMATS:
        parsed = iso.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
        candidates.append(_micros(parsed))
    for fmt in _NAIVE_FORMATS:
        naive = iso.str.to_datetime(fmt, strict=False, time_unit="us")
        candidates.append(
            _micros(naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null"))
        )
    return pl.coalesce(candidates)


def _parsed(raw: pl.DataFrame, mapping: FieldMapping) -> pl.DataFrame:
    """Every raw row with its parsed fields and a `reason` (null for good rows)."""
    currency = _text("currency").str.to_uppercase()
    if mapping.default_currency is not None:
        currency = currency.fill_null(pl.lit(mapping.default_currency))
    parts = _text("amount").str.extract_groups(_AMOUNT_RE)
    digits = currency.replace_strict(MINOR_UNITS, default=None, return_dtype=pl.Int64)
    frame = raw.with_columns(
        _cur=currency,
        _digits=digits,
        _sign=parts.struct.field("1"),
        _int=parts.struct.field("2"),
        _frac=parts.struct.field("3").str.strip_chars_end("0").fill_null(""),
        _ts=_timestamp(mapping),
    )
    frac_ok = pl.col("_frac").str.len_chars() <= pl.col("_digits")
    int_ok = pl.col("_int").str.len_chars() <= MAX_INTEGER_DIGITS
    scaled = pl.col("_int").cast(pl.Int64) * 10**MAX_MINOR_UNITS + pl.col("_frac").str.pad_end(
        MAX_MINOR_UNITS, "0"
    ).str.slice(0, MAX_MINOR_UNITS).cast(pl.Int64)
    divisor = pl.col("_digits").replace_strict(_DIVISOR, default=None, return_dtype=pl.Int64)
    minor = pl.when(frac_ok & int_ok).then(scaled // divisor)
    signed = pl.when(pl.col("_sign") == "-").then(-minor).otherwise(minor)
    return frame.with_columns(_amount=signed, reason=_reason(frac_ok, int_ok))


def _reason(frac_ok: pl.Expr, int_ok: pl.Expr) -> pl.Expr:
    amount, currency, date = pl.col("amount"), pl.col("_cur"), pl.col("date")
    quoted = pl.lit("'") + amount.str.strip_chars() + pl.lit("'")
    return (
        pl.when(_text("amount").is_null())
        .then(pl.lit("missing amount"))
        .when(currency.is_null())
        .then(pl.lit("missing currency"))
        .when(pl.col("_digits").is_null())
        .then(pl.lit("unknown currency '") + currency + pl.lit("'"))
        .when(pl.col("_int").is_null())
        .then(pl.lit("amount ") + quoted + pl.lit(" is not a decimal number"))
        .when(~int_ok)
        .then(pl.lit("amount ") + quoted + pl.lit(" is too large"))
        .when(~frac_ok)
        .then(
            pl.lit("amount ")
            + quoted
            + pl.lit(" has more decimals than ")
            + currency
            + pl.lit(" allows (")
            + pl.col("_digits").cast(pl.String)
            + pl.lit(")")
        )
        .when(_text("date").is_not_null() & pl.col("_ts").is_null())
        .then(pl.lit("date '") + date.str.strip_chars() + pl.lit("' is not a valid date"))
        .otherwise(None)
    )


def normalise(raw: pl.DataFrame, mapping: FieldMapping) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw text rows into normalised records (`RECORD_SCHEMA`) and rejects."""
    frame = _parsed(raw, mapping)
    good = frame.filter(pl.col("reason").is_null())
    records = good.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
        pl.col("line").cast(pl.Int64),
        _text("id").alias("id"),
        pl.col("_amount").alias("amount"),
        pl.col("_cur").alias("currency"),
        pl.col("_ts").alias("ts"),
        _text("description").alias("description"),
        pl.col("reference").str.replace_all(r"\s+", "").str.to_uppercase().alias("_ref"),
    ).with_columns(reference=pl.when(pl.col("_ref") == "").then(None).otherwise(pl.col("_ref")))
    rejects = frame.filter(pl.col("reason").is_not_null()).select(REJECT_SCHEMA.keys())
    return records.select(RECORD_SCHEMA.keys()).cast(RECORD_SCHEMA), rejects.cast(REJECT_SCHEMA)
