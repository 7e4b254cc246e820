"""The configuration reference is generated from the settings and kept current."""

from __future__ import annotations

from pathlib import Path

from settler_jobs.config import Settings, reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_says_what_it_does() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []


def test_the_reference_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "run `python scripts/config_reference.py` and commit docs/configuration.md"
    )
