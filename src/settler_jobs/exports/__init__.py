"""Exports: tenant-scoped datasets rendered to CSV or PDF and stored as files."""
