"""Tenants: the directory (tiers, API keys), per-tenant accounting and KPI snapshots."""
