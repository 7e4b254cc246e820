"""The dead-letter queue: capture of dead jobs, triage (retry, discard) and the error log."""
