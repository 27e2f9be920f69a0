"""The SQL of API keys: storing a key's record and its secret's hash, looking one up, listing, revoking.

Plain async functions that take a connection, as in `collection_store.py`. The gateway makes
tokens and checks secrets; this module never sees a secret, only its SHA-256. Every statement
on a tenant's keys names the tenant, so a gateway bug cannot list or revoke another tenant's.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ragline.api_keys import role_name, role_value
from ragline.errors import AlreadyExists, NotFound
from ragline.v1 import admin_service_pb2
from ragline_retriever.database import PooledConnection

_COLUMNS = "key_id, tenant, role, display_name, created_at, revoked_at"


def api_key_pb(row: asyncpg.Record) -> admin_service_pb2.ApiKey:
    """A row of `api_keys` as the API's ApiKey (never with its hash)."""
    key = admin_service_pb2.ApiKey(
        key_id=row["key_id"],
        tenant=row["tenant"],
        role=role_value(row["role"]),  # type: ignore[arg-type]
        display_name=row["display_name"],
    )
    key.create_time.FromDatetime(row["created_at"])
    if row["revoked_at"] is not None:
        key.revoke_time.FromDatetime(row["revoked_at"])
    return key


async def create_key(
    conn: PooledConnection, key: admin_service_pb2.ApiKey, secret_sha256: str
) -> asyncpg.Record:
    """Stores a new key; ALREADY_EXISTS if its id is taken (a random 80-bit id: a caller's bug)."""
    try:
        row = await conn.fetchrow(
            "INSERT INTO api_keys (key_id, tenant, role, display_name, secret_sha256)"
            f" VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
            key.key_id,
            key.tenant,
            role_name(key.role),
            key.display_name,
            secret_sha256,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(
            f"an API key with id {key.key_id!r} exists already", field="api_key.key_id"
        ) from None
    assert row is not None  # INSERT ... RETURNING returns the row or raises
    return row


async def lookup_key(conn: PooledConnection, key_id: str) -> asyncpg.Record:
    """The key `key_id` with its `secret_sha256`, revoked or not; NOT_FOUND if there is none."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS}, secret_sha256 FROM api_keys WHERE key_id = $1", key_id)
    if row is None:
        raise NotFound(f"API key {key_id!r} does not exist", field="key_id")
    return row


async def list_keys(
    conn: PooledConnection, tenant: str, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` of the tenant's keys, oldest first, after the (created_at, key_id) `after`."""
    if after is None:
        return await conn.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE tenant = $1 ORDER BY created_at, key_id LIMIT $2",
            tenant,
            limit,
        )
    return await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_keys WHERE tenant = $1 AND (created_at, key_id) > ($2, $3)"
        " ORDER BY created_at, key_id LIMIT $4",
        tenant,
        after[0],
        after[1],
        limit,
    )


async def revoke_key(conn: PooledConnection, tenant: str, key_id: str) -> asyncpg.Record:
    """Marks the tenant's key `key_id` revoked (once: a revoked key keeps its first revoke time).

    NOT_FOUND when the tenant has no such key, whether or not another tenant has: existence must not leak.
    """
    row = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, clock_timestamp())"
        f" WHERE tenant = $1 AND key_id = $2 RETURNING {_COLUMNS}",
        tenant,
        key_id,
    )
    if row is None:
        raise NotFound(f"API key {key_id!r} does not exist in this tenant", field="key_id")
    return row
