"""Reconciliation: read two sources, normalise, match one-to-one, report and store.

The job handler calls `job.execute_run`, which reads the definition (`store`), runs
`run_reconciliation` in a process pool and writes the results (`results`); see README
"Reconciliation" for the pieces.
"""

from settler_jobs.reconcile.matching import Reason, Rule
from settler_jobs.reconcile.raw import SourceError
from settler_jobs.reconcile.run import ReconciliationResult, Summary, run_reconciliation
from settler_jobs.reconcile.service import Reconciliations
from settler_jobs.reconcile.specs import FieldMapping, FileSource, HttpSource, MatchRules, SqlSource

__all__ = [
    "FieldMapping",
    "FileSource",
    "HttpSource",
    "MatchRules",
    "Reason",
    "ReconciliationResult",
    "Reconciliations",
    "Rule",
    "SourceError",
    "SqlSource",
    "Summary",
    "run_reconciliation",
]
