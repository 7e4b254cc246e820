"""Write docs/configuration.md from the Settings model (run after changing config.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from settler_jobs.config import Settings, reference_markdown

TARGET = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

if __name__ == "__main__":
    TARGET.write_text(reference_markdown(), encoding="utf-8")
    print(f"wrote {TARGET.name} ({len(Settings.model_fields)} settings)", file=sys.stderr)
