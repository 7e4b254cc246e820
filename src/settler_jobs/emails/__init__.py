"""Email: templates rendered once, sent per recipient through one provider, with a ledger.

`Emails` queues a template for recipients and reads their status; `send_email` does the
same for callers that hold only a submitter. The handler lives in `job`.
"""

from __future__ import annotations

from settler_jobs.emails.service import EmailRequest, Emails, send_email

__all__ = ["EmailRequest", "Emails", "send_email"]
