"""Tenants: the directory (tiers, contacts, API keys), per-tenant stats and the KPI cache."""

from __future__ import annotations

from settler_jobs.tenants.directory import ApiKey, Principal, Tenant, TenantDirectory
from settler_jobs.tenants.stats import TenantStats

__all__ = ["ApiKey", "Principal", "Tenant", "TenantDirectory", "TenantStats"]
