"""The whole relational schema: importing this module registers every table on `Base`.

Migrations compare against it and tests empty it; a new table module is added here.
"""

from __future__ import annotations

from sqlalchemy import MetaData

import settler_jobs.storage.audit_tables
import settler_jobs.storage.email_tables
import settler_jobs.storage.export_tables
import settler_jobs.storage.reconcile_tables
import settler_jobs.storage.schedule_tables
import settler_jobs.storage.shared_state_tables
import settler_jobs.storage.tenant_tables
import settler_jobs.storage.webhook_tables  # noqa: F401
from settler_jobs.storage.tables import Base


def metadata() -> MetaData:
    """`Base.metadata` with every table of the application registered."""
    return Base.metadata
