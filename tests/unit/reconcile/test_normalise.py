"""Normalisation: exact minor units per currency, dates with zones, rejects with reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from settler_jobs.reconcile.currencies import MINOR_UNITS, format_amount
from settler_jobs.reconcile.normalise import FIELDS, normalise
from settler_jobs.reconcile.specs import FieldMapping


def raw(*rows: dict[str, Any]) -> pl.DataFrame:
    data: dict[str, list[Any]] = {"line": list(range(2, 2 + len(rows)))}
    data |= {f: [row.get(f) for row in rows] for f in FIELDS}
    return pl.DataFrame(data, schema={"line": pl.Int64, **dict.fromkeys(FIELDS, pl.String)})


def one(mapping: FieldMapping | None = None, **fields: Any) -> dict[str, Any]:
    row = {"id": "x", "amount": "1", "currency": "USD", "date": "2026-01-15"} | fields
    records, rejects = normalise(raw(row), mapping or FieldMapping())
    assert rejects.is_empty(), rejects["reason"].to_list()
    return records.row(0, named=True)


def reason(mapping: FieldMapping | None = None, **fields: Any) -> str:
    row = {"id": "x", "amount": "1", "currency": "USD", "date": "2026-01-15"} | fields
    records, rejects = normalise(raw(row), mapping or FieldMapping())
    assert records.is_empty()
    (line, text) = rejects.select("line", "reason").row(0)
    assert line == 2
    return str(text)


def micros(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.50", "USD", 1250),
        ("12.5", "usd", 1250),
        (" -0.01 ", "EUR", -1),
        ("+3", "GBP", 300),
        ("1500", "JPY", 1500),
        ("1500.000", "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("-0.5", "BHD", -500),
        ("1.2345", "CLF", 12345),
        ("0.10", "USD", 10),
        ("99999999999999.99", "USD", 9_999_999_999_999_999),
    ],
)
def test_amounts_become_exact_minor_units(amount: str, currency: str, minor: int) -> None:
    record = one(amount=amount, currency=currency)
    assert (record["amount"], record["currency"]) == (minor, currency.upper())


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.234", "USD", "amount '1.234' has more decimals than USD allows (2)"),
        ("1.5", "JPY", "amount '1.5' has more decimals than JPY allows (0)"),
        ("1e3", "USD", "amount '1e3' is not a decimal number"),
        ("1,000.00", "USD", "amount '1,000.00' is not a decimal number"),
        ("12.", "USD", "amount '12.' is not a decimal number"),
        ("123456789012345", "USD", "amount '123456789012345' is too large"),
        ("", "USD", "missing amount"),
        ("1", "", "missing currency"),
        ("1", "XAU", "unknown currency 'XAU'"),
        ("1", "US", "unknown currency 'US'"),
    ],
)
def test_bad_amounts_and_currencies_are_refused_with_a_reason(
    amount: str, currency: str, expected: str
) -> None:
    assert reason(amount=amount, currency=currency) == expected


def test_the_default_currency_fills_missing_ones() -> None:
    mapping = FieldMapping(currency=None, default_currency="JPY")
    assert one(mapping, currency=None, amount="7")["currency"] == "JPY"


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2026-01-15", "UTC", datetime(2026, 1, 15, tzinfo=UTC)),
        ("2026-01-15", "Europe/Berlin", datetime(2026, 1, 14, 23, tzinfo=UTC)),
        ("2026-01-15T10:00:00Z", "Europe/Berlin", datetime(2026, 1, 15, 10, tzinfo=UTC)),
        ("2026-01-15T10:00:00+02:00", "UTC", datetime(2026, 1, 15, 8, tzinfo=UTC)),
        ("2026-01-15 10:00:00", "America/New_York", datetime(2026, 1, 15, 15, tzinfo=UTC)),
        ("2026-07-15T10:00", "Europe/Berlin", datetime(2026, 7, 15, 8, tzinfo=UTC)),
    ],
)
def test_dates_and_timestamps_become_utc(text: str, zone: str, expected: datetime) -> None:
    assert one(FieldMapping(timezone=zone), date=text)["ts"] == micros(expected)


def test_a_custom_date_format() -> None:
    record = one(FieldMapping(date_format="%d/%m/%Y"), date="15/01/2026")
    assert record["ts"] == micros(datetime(2026, 1, 15, tzinfo=UTC))


@pytest.mark.parametrize("text", ["2026-02-30", "yesterday", "2026-13-01"])
def test_bad_dates_are_refused(text: str) -> None:
    assert reason(date=text) == f"date '{text}' is not a valid date"


def test_a_local_time_that_does_not_exist_is_refused() -> None:
    text = "2026-03-29T02:30:00"  # clocks jump from 02:00 to 03:00 in Berlin
    assert reason(FieldMapping(timezone="Europe/Berlin"), date=text).startswith("date ")


def test_missing_dates_are_allowed() -> None:
    assert one(date=None)["ts"] is None


def test_ids_are_trimmed_and_references_normalised() -> None:
    record = one(id="  Abc-1 ", reference=" inv 2024\t01 ")
    assert (record["id"], record["reference"]) == ("Abc-1", "INV202401")
    assert one(id="   ", reference="")["id"] is None


def test_good_rows_keep_their_lines_and_get_positions() -> None:
    rows = [{"amount": "1", "currency": "USD"}, {"amount": "x"}, {"amount": "2", "currency": "USD"}]
    records, rejects = normalise(raw(*rows), FieldMapping(date=None))
    assert records.select("row", "line").rows() == [(0, 2), (1, 4)]
    assert rejects["line"].to_list() == [3]


def test_the_currency_table_has_real_minor_units() -> None:
    expected = {"USD": 2, "JPY": 0, "KWD": 3, "BHD": 3, "CLF": 4, "KRW": 0, "TND": 3, "EUR": 2}
    assert {code: MINOR_UNITS[code] for code in expected} == expected
    assert "XAU" not in MINOR_UNITS and "XXX" not in MINOR_UNITS


@pytest.mark.parametrize(
    ("minor", "code", "text"),
    [(-1250, "USD", "-12.50"), (5, "KWD", "0.005"), (1500, "JPY", "1500"), (1, "CLF", "0.0001")],
)
def test_format_amount(minor: int, code: str, text: str) -> None:
    assert format_amount(minor, code) == text
