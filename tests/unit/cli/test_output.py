"""How the CLI prints a tenant's usage for people."""

from __future__ import annotations

import pytest
from rich.console import Console

from settler_jobs.cli import output
from settler_jobs.records import LaneUsage, TenantUsage


def test_the_usage_summary_is_one_line_even_in_a_narrow_pipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(output, "_console", Console(width=80, force_terminal=False))
    usage = TenantUsage(
        "acme-corporation-international",
        "growth",
        200_000,
        25,
        [LaneUsage("reconciliation", 12, 3, 1, 4), LaneUsage("exports", 0, 0, 0, 0)],
    )
    output.emit_usage(usage, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "acme-corporation-international (growth): waiting 12 of quota 200000, "
        "running 3 (cap 25 per lane), cap hits 4"
    )
    rows = [line for line in lines[1:] if "reconciliation" in line]
    assert len(rows) == 1
    assert [cell.strip() for cell in rows[0].split("│")[2:6]] == ["12", "3", "1", "4"]
    assert not any("exports" in line for line in lines)  # idle lanes are left out


def test_ids_are_printed_whole_even_when_the_table_must_shrink(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(output, "_console", Console(width=60, force_terminal=False))
    export_id = "exp_aacdc9a2e0064c539ccd33f8ed009ec0"
    row = {
        "id": export_id,
        "dataset": "audit_log",
        "format": "pdf",
        "status": "succeeded",
        "created": "2026-12-07T02:42:22+00:00",
    }
    output.emit_rows([row], as_json=False)
    assert export_id in capsys.readouterr().out


def test_piped_output_is_laid_out_wider_than_a_terminal_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output._make_console().width == 200  # stdout is captured: not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert output._make_console().width == 100
