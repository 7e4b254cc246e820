"""Exports: tenant-scoped datasets rendered to CSV or PDF and stored as files.

`Exports` records requests and enqueues their generation; `Export` is one request.
"""

from __future__ import annotations

from settler_jobs.exports.service import Exports
from settler_jobs.exports.store import Export, ExportStatus

__all__ = ["Export", "ExportStatus", "Exports"]
