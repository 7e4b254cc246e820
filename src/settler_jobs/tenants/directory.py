"""Tenants and API keys: create, list, change tier, issue and revoke keys, authenticate.

A key reads ``sk_live_<key id>_<secret>``: the id finds the row, the secret (256 random
bits) is checked against a SHA-256 digest with `hmac.compare_digest`. The plain key is
returned once, at creation, and never stored; a revoked key fails from the next
request on (every request reads the row).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from settler_jobs import errors
from settler_jobs.addresses import UnsafeEmail, check_address
from settler_jobs.clock import utc_now
from settler_jobs.domain import Tier, validate_tenant_id
from settler_jobs.storage.tenant_tables import ApiKeyRow, TenantRow

KEY_PREFIX: Final = "sk_live_"
RESERVED_TENANTS: Final = frozenset({"system"})
"""Tenant ids the system uses for its own scheduled jobs."""
MAX_NAME: Final = 200
_KEY_ID_BYTES: Final = 8
_SECRET_BYTES: Final = 32
_MAX_KEY_LENGTH: Final = 200
# last_used_at is a hint, not an audit log: write it at most this often per key.
_LAST_USED_EVERY: Final = timedelta(seconds=60)
# Compared against when the key id is unknown, so both paths do the same work.
_DUMMY_HASH: Final = hashlib.sha256(b"settler-no-such-key").hexdigest()


@dataclass(frozen=True)
class Tenant:
    """A tenant and its plan."""

    id: str
    name: str
    tier: Tier
    contact_email: str | None
    """Where notices go (an endpoint disabled); None: notices are only recorded."""
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An API key's stored facts (never its secret)."""

    id: str
    tenant_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: decided by its key, never by its body."""

    tenant_id: str
    tier: Tier
    key_id: str


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(
        row.id, row.name, Tier(row.tier), row.contact_email, row.created_at, row.updated_at
    )


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.id, row.tenant_id, row.name, row.created_at, row.revoked_at, row.last_used_at)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _contact(address: str | None) -> str | None:
    if address is None or not address.strip():
        return None
    try:
        return check_address(address.strip(), header="contact email")
    except UnsafeEmail as exc:
        raise errors.InvalidJob(str(exc)) from None


def _checked_name(name: str) -> str:
    text = name.strip()
    if len(text) > MAX_NAME:
        raise ValueError(f"name must be at most {MAX_NAME} characters")
    return text


def split_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    if len(token) > _MAX_KEY_LENGTH or not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id.isalnum() or not secret:
        return None
    return key_id, secret


class TenantDirectory:
    """Tenant and key operations over a database; each call is one transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create_tenant(
        self, tenant_id: str, tier: Tier, *, name: str = "", contact_email: str | None = None
    ) -> Tenant:
        """Register a tenant; InvalidState if the id is taken or reserved."""
        validate_tenant_id(tenant_id)
        if tenant_id.lower() in RESERVED_TENANTS:
            raise errors.InvalidState(f"tenant id {tenant_id!r} is reserved for the system")
        now = utc_now()
        row = TenantRow(
            id=tenant_id,
            name=_checked_name(name),
            tier=tier.value,
            contact_email=_contact(contact_email),
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise errors.InvalidState(f"tenant {tenant_id!r} already exists") from None
        return _tenant(row)

    async def list_tenants(self) -> list[Tenant]:
        """Every tenant, by id."""
        async with self._sessions() as session:
            rows = await session.scalars(select(TenantRow).order_by(TenantRow.id))
            return [_tenant(row) for row in rows]

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """One tenant; NotFound if missing."""
        async with self._sessions() as session:
            row = await session.get(TenantRow, tenant_id)
            if row is None:
                raise errors.NotFound(f"no tenant {tenant_id!r}")
            return _tenant(row)

    async def set_tier(self, tenant_id: str, tier: Tier) -> Tenant:
        """Change a tenant's plan; its keys act with the new tier from the next request."""
        async with self._sessions() as session, session.begin():
            row = await session.get(TenantRow, tenant_id)
            if row is None:
                raise errors.NotFound(f"no tenant {tenant_id!r}")
            row.tier = tier.value
            row.updated_at = utc_now()
            return _tenant(row)

    async def set_contact(self, tenant_id: str, contact_email: str | None) -> Tenant:
        """Set (or clear, with None) where the tenant's notices are emailed."""
        checked = _contact(contact_email)
        async with self._sessions() as session, session.begin():
            row = await session.get(TenantRow, tenant_id)
            if row is None:
                raise errors.NotFound(f"no tenant {tenant_id!r}")
            row.contact_email, row.updated_at = checked, utc_now()
            return _tenant(row)

    async def create_key(self, tenant_id: str, *, name: str = "") -> tuple[ApiKey, str]:
        """Issue a key for the tenant; returns it and the plain key, shown this once."""
        key_id = secrets.token_hex(_KEY_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        async with self._sessions() as session, session.begin():
            if await session.get(TenantRow, tenant_id) is None:
                raise errors.NotFound(f"no tenant {tenant_id!r}")
            row = ApiKeyRow(
                id=key_id,
                tenant_id=tenant_id,
                name=_checked_name(name),
                secret_hash=_digest(secret),
                created_at=utc_now(),
                revoked_at=None,
                last_used_at=None,
            )
            session.add(row)
        return _key(row), f"{KEY_PREFIX}{key_id}_{secret}"

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Keys (of one tenant, or all), oldest first; revoked ones included."""
        stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKeyRow.tenant_id == tenant_id)
        async with self._sessions() as session:
            return [_key(row) for row in await session.scalars(stmt)]

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key at once; revoking twice keeps the first time."""
        async with self._sessions() as session, session.begin():
            row = await session.get(ApiKeyRow, key_id)
            if row is None:
                raise errors.NotFound(f"no API key {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = utc_now()
            return _key(row)

    async def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        parts = split_key(token)
        async with self._sessions() as session:
            found = None
            if parts is not None:
                stmt = (
                    select(ApiKeyRow, TenantRow.tier)
                    .join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)
                    .where(ApiKeyRow.id == parts[0])
                )
                found = (await session.execute(stmt)).first()
            row, tier = found if found is not None else (None, None)
            expected = row.secret_hash if row is not None else _DUMMY_HASH
            given = _digest(parts[1]) if parts is not None else ""
            if not hmac.compare_digest(expected, given) or row is None or tier is None:
                return None
            if row.revoked_at is not None:
                return None
            principal = Principal(row.tenant_id, Tier(tier), row.id)
            await self._touch(session, row)
            return principal

    async def _touch(self, session: AsyncSession, row: ApiKeyRow) -> None:
        now = utc_now()
        if row.last_used_at is not None and now - row.last_used_at < _LAST_USED_EVERY:
            return
        await session.execute(
            update(ApiKeyRow).where(ApiKeyRow.id == row.id).values(last_used_at=now)
        )
        await session.commit()
