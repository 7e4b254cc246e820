"""File adapters and `run_reconciliation` end to end on files in a temporary storage root."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import polars as pl
import pytest

from settler_jobs.reconcile import (
    FieldMapping,
    FileSource,
    MatchRules,
    SourceError,
    run_reconciliation,
)
from settler_jobs.reconcile.files import read_file

HEADER = "id,amount,currency,date,description,reference\n"
MAPPING = FieldMapping(
    id="txn", amount="value", currency="ccy", date="booked", description=None, reference="ref"
)


def csv(root: Path, name: str, body: str) -> FileSource:
    (root / name).write_text(body)
    return FileSource(format="csv", path=name)


def test_csv_jsonl_and_parquet_read_the_mapped_columns_as_text(tmp_path: Path) -> None:
    rows = [
        {"txn": "a", "value": "12.50", "ccy": "USD", "booked": "2026-01-02", "ref": "r1"},
        {"txn": "b", "value": "-3", "ccy": "JPY", "booked": "2026-01-03", "ref": None},
    ]
    pl.DataFrame(rows).write_csv(tmp_path / "in.csv")
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pl.DataFrame(rows).write_parquet(tmp_path / "in.parquet")
    frames = [
        read_file(FileSource(format=kind, path=f"in.{kind}", mapping=MAPPING), tmp_path)
        for kind in ("csv", "jsonl", "parquet")
    ]
    expected = [(2, "a", "12.50", "USD"), (3, "b", "-3", "JPY")]
    assert frames[0][0].select("line", "id", "amount", "currency").rows() == expected
    assert [r[1:] for r in frames[1][0].select("line", "id", "amount", "currency").rows()] == [
        r[1:] for r in expected
    ]
    assert frames[2][0].select("id", "amount", "reference").rows() == [
        ("a", "12.50", "r1"),
        ("b", "-3", None),
    ]
    assert all(f[0]["description"].is_null().all() for f in frames)


def test_json_numbers_stay_exact_and_bad_lines_are_reported(tmp_path: Path) -> None:
    body = (
        '{"id": "a", "amount": 0.1, "currency": "USD"}\n'
        "\n"
        "{not json\n"
        '["a list"]\n'
        '{"id": "b", "amount": {"v": 1}, "currency": "USD"}\n'
        '{"id": "c", "amount": 1.005, "currency": "KWD"}\n'
    )
    (tmp_path / "in.jsonl").write_text(body)
    frame, rejects = read_file(FileSource(format="jsonl", path="in.jsonl"), tmp_path)
    assert frame.select("line", "amount").rows() == [(1, "0.1"), (6, "1.005")]
    assert [(r["line"], str(r["reason"]).split(":")[0]) for r in rejects] == [
        (3, "not valid JSON"),
        (4, "the record is not a JSON object"),
        (5, "field 'amount' is a dict, not a scalar"),
    ]


@pytest.mark.parametrize("path", ["../outside.csv", "/etc/passwd", "missing.csv"])
def test_paths_stay_inside_the_storage_root(tmp_path: Path, path: str) -> None:
    root = tmp_path / "tenant"
    root.mkdir()
    (tmp_path / "outside.csv").write_text(HEADER)
    with pytest.raises(SourceError):
        read_file(FileSource(format="csv", path=path), root)


def test_a_missing_column_fails_the_source_clearly(tmp_path: Path) -> None:
    spec = csv(tmp_path, "in.csv", "id,amount\n1,2\n")
    with pytest.raises(SourceError, match="no column 'currency', 'date'"):
        read_file(spec, tmp_path)


def test_empty_files_reconcile_to_nothing(tmp_path: Path) -> None:
    empty = csv(tmp_path, "empty.csv", "")
    header_only = csv(tmp_path, "header.csv", HEADER)
    (tmp_path / "empty.jsonl").write_text("")
    jsonl = FileSource(format="jsonl", path="empty.jsonl")
    for source, target in ((empty, header_only), (jsonl, empty)):
        result = run_reconciliation(source, target, MatchRules(), files_root=tmp_path)
        assert result.summary.source_records == result.summary.target_records == 0
        assert result.matches.is_empty() and result.unmatched.is_empty()


def test_a_run_reports_matches_discrepancies_unmatched_and_totals(tmp_path: Path) -> None:
    source = csv(
        tmp_path,
        "bank.csv",
        HEADER
        + "a,10.00,USD,2026-01-10,coffee,\n"
        + "b,20.00,USD,2026-01-10,lunch,\n"
        + "c,5.000,KWD,2026-01-10,fee,\n"
        + "d,oops,USD,2026-01-10,bad,\n"
        + "e,7.5,USD,2026-01-10,left over,\n",
    )
    target = csv(
        tmp_path,
        "ledger.csv",
        HEADER
        + "a,10.00,USD,2026-01-11,,\n"
        + "x,20.02,USD,2026-01-12,,\n"
        + "c,5.001,KWD,2026-01-10,,\n"
        + "y,-1,USD,2026-01-10,,\n",
    )
    steps: list[tuple[float, str]] = []
    result = run_reconciliation(
        source,
        target,
        MatchRules(amount_tolerance_minor=2),
        files_root=tmp_path,
        progress=lambda fraction, stage: steps.append((fraction, stage)),
    )
    assert result.matches.select("rule", "source_id", "target_id").rows() == [
        ("exact_id", "a", "a"),
        ("tolerance", "b", "x"),
    ]
    assert result.discrepancies.select("kind", "source_id", "difference").rows() == [
        ("amount_mismatch", "c", 1)
    ]
    assert result.unmatched.select("side", "line", "reason").rows() == [
        ("source", 5, "malformed"),
        ("source", 6, "no_candidate"),
        ("target", 5, "no_candidate"),
    ]
    assert result.unmatched["detail"][0] == "amount 'oops' is not a decimal number"
    summary = result.summary
    assert (summary.source_records, summary.target_records, summary.matched) == (5, 4, 2)
    assert (summary.malformed_source, summary.unmatched_source, summary.unmatched_target) == (
        1,
        2,
        1,
    )
    assert summary.totals == {
        "USD": {
            "matched_source": 3000,
            "matched_target": 3002,
            "unmatched_source": 750,
            "unmatched_target": -100,
        }
    }
    fractions = [f for f, _stage in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    copy = pickle.loads(pickle.dumps(result))
    assert copy.matches.equals(result.matches) and copy.summary == summary


def test_source_errors_survive_a_process_boundary() -> None:
    error = pickle.loads(pickle.dumps(SourceError("boom", transient=True)))
    assert (str(error), error.transient) == ("boom", True)


def test_excel_style_csv_with_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    (tmp_path / "excel.csv").write_bytes(
        b"\xef\xbb\xbf" + HEADER.replace("\n", "\r\n").encode() + b"a,1.00,USD,2026-01-01,x,\r\n"
    )
    frame, _rejects = read_file(FileSource(format="csv", path="excel.csv"), tmp_path)
    assert frame.select("line", "id", "amount", "description").rows() == [(2, "a", "1.00", "x")]


def test_a_semicolon_delimited_file(tmp_path: Path) -> None:
    (tmp_path / "eu.csv").write_text(HEADER.replace(",", ";") + "a;12.50;EUR;2026-01-01;;\n")
    spec = FileSource(format="csv", path="eu.csv", delimiter=";")
    assert read_file(spec, tmp_path)[0].select("id", "amount").rows() == [("a", "12.50")]


def test_a_payout_is_counted_once_in_the_totals(tmp_path: Path) -> None:
    source = csv(
        tmp_path, "charges.csv", HEADER + "a,10.00,USD,2026-01-10,,\nb,5.00,USD,2026-01-10,,\n"
    )
    target = csv(tmp_path, "payouts.csv", HEADER + "p,15.00,USD,2026-01-12,,\n")
    result = run_reconciliation(source, target, MatchRules(many_to_one=True), files_root=tmp_path)
    assert result.matches.select("rule", "source_id", "target_id").rows() == [
        ("many_to_one", "a", "p"),
        ("many_to_one", "b", "p"),
    ]
    assert result.summary.totals["USD"]["matched_source"] == 1500
    assert result.summary.totals["USD"]["matched_target"] == 1500
