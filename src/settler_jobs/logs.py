"""Logging: one line per event, `event key=value ...`, extras included."""

from __future__ import annotations

import logging
import os
from typing import Final

_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """Appends a record's extra fields as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(f"{k}={v!r}" for k, v in sorted(extras.items()))
        return line


def setup(level: str | None = None) -> None:
    """Configure the root logger once for a CLI process (level: SETTLER_LOG_LEVEL, INFO)."""
    level = (level or os.environ.get("SETTLER_LOG_LEVEL") or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        level = "INFO"
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
