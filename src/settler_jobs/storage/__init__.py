"""Relational storage: engines, sessions, tables and schema migrations."""
