"""The SQL of collections: creating one with its HNSW index, reading, listing and deleting them, and
the lookups and generation bumps every write of a collection's documents starts and ends with.

Plain async functions that take a connection, as in `jobs.py`; the servicer opens the connection
and announces changes (`state_publisher.Change`), which the writes here mark as made. Collections
are named within a tenant: every statement here that names a collection names its tenant too, and
another tenant's collection is NOT_FOUND with the same message as one that does not exist.
"""

from __future__ import annotations

import asyncpg

from ragline.errors import AlreadyExists, NotFound
from ragline_retriever import jobs
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import PooledConnection
from ragline_retriever.search import create_index_sql, drop_index_sql
from ragline_retriever.state_publisher import Change

_COLLECTION_SQL = """
    SELECT c.id, c.name, c.embedding_model, c.dimension, c.generation, c.created_at,
           s.document_count, s.chunk_count,
           (SELECT m.job_id FROM collection_migrations AS m WHERE m.source_id = c.id) AS migration_job_id
    FROM collections AS c,
         LATERAL (SELECT count(*) AS document_count, coalesce(sum(chunk_count), 0)::bigint AS chunk_count
                  FROM documents WHERE collection_id = c.id) AS s
"""
# COLLECTION_VIEW_BASIC: the same columns without counting the collection's documents.
_COLLECTION_BASIC_SQL = """
    SELECT c.id, c.name, c.embedding_model, c.dimension, c.generation, c.created_at,
           0::bigint AS document_count, 0::bigint AS chunk_count
    FROM collections AS c
"""


def _not_found(name: str, field: str) -> NotFound:
    # The same words whether the collection is missing or another tenant's: existence must not leak.
    return NotFound(f"collection {name!r} does not exist", field=field)


async def create_collection(
    conn: PooledConnection,
    config: RetrieverConfig,
    tenant: str,
    name: str,
    embedding_model: str,
    dimension: int,
) -> asyncpg.Record:
    """Inserts `tenant`'s collection and builds its HNSW index; ALREADY_EXISTS if the tenant has
    one of that name.

    If the index cannot be built, the collection is removed again.
    """
    try:
        row = await conn.fetchrow(
            "INSERT INTO collections (tenant, name, embedding_model, dimension) VALUES ($1, $2, $3, $4)"
            " RETURNING id, name, embedding_model, dimension, generation, created_at,"
            " 0::bigint AS document_count, 0::bigint AS chunk_count",
            tenant,
            name,
            embedding_model,
            dimension,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"collection {name!r} already exists", field="name") from None
    assert row is not None  # INSERT ... RETURNING returns the row or raises
    try:
        # For the session, as CONCURRENTLY runs outside a transaction; reset below, since
        # the pool does not reset connections (see Database).
        await conn.execute(f"SET maintenance_work_mem = '{config.maintenance_work_mem}'")
        await conn.execute(create_index_sql(row["id"], dimension, config.hnsw_m, config.hnsw_ef_construction))
    except asyncpg.PostgresError:
        # A failed concurrent build leaves an invalid index behind; remove it with the row.
        await conn.execute(drop_index_sql(row["id"]))
        await conn.execute("DELETE FROM collections WHERE id = $1", row["id"])
        raise
    finally:
        await conn.execute("RESET maintenance_work_mem")
    return row


async def get_collection(conn: PooledConnection, tenant: str, name: str, counted: bool) -> asyncpg.Record:
    """`tenant`'s collection `name`, with its documents and chunks counted if `counted` (else 0);
    NOT_FOUND if none."""
    row = await conn.fetchrow(
        f"{_COLLECTION_SQL if counted else _COLLECTION_BASIC_SQL} WHERE c.tenant = $1 AND c.name = $2",
        tenant,
        name,
    )
    if row is None:
        raise _not_found(name, "name")
    return row


async def list_collections(
    conn: PooledConnection, tenant: str, after: str, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` of `tenant`'s collections, with their counts, by name after the name `after`."""
    return await conn.fetch(
        # Names starting with '~' are a migration's target or retired source (`collection_migrations`).
        f"{_COLLECTION_SQL} WHERE c.tenant = $1 AND c.name > $2 AND c.name NOT LIKE '~%' ORDER BY c.name LIMIT $3",
        tenant,
        after,
        limit,
    )


async def delete_collection(conn: PooledConnection, tenant: str, name: str, change: Change) -> int:
    """Deletes `tenant`'s collection with its documents and chunks, then its index; the number of documents."""
    async with conn.transaction():
        collection_id = await conn.fetchval(
            "SELECT id FROM collections WHERE tenant = $1 AND name = $2 FOR UPDATE", tenant, name
        )
        if collection_id is None:
            raise _not_found(name, "name")
        documents: int = await conn.fetchval(
            "SELECT count(*) FROM documents WHERE collection_id = $1", collection_id
        )
        change.made = True
        # A migration's target goes with its source; the migration's job is cancelled.
        migrations = await conn.fetch(
            "SELECT job_id FROM collection_migrations WHERE source_id = $1", collection_id
        )
        for migration in migrations:
            await jobs.cancel_job(conn, tenant, migration["job_id"], "the collection was deleted")
        targets = await conn.fetch(
            "DELETE FROM collections WHERE id IN (SELECT target_id FROM collection_migrations WHERE source_id = $1)"
            " RETURNING id",
            collection_id,
        )
        await conn.execute("DELETE FROM collections WHERE id = $1", collection_id)
    # After the commit and CONCURRENTLY: searches of other collections never wait for it.
    for dropped in [collection_id, *(row["id"] for row in targets)]:
        await conn.execute(drop_index_sql(dropped))
    return documents


async def collection_id(conn: PooledConnection, tenant: str, name: str) -> int:
    """The id of `tenant`'s collection `name`; NOT_FOUND on the field `collection` if there is none."""
    found: int | None = await conn.fetchval(
        "SELECT id FROM collections WHERE tenant = $1 AND name = $2", tenant, name
    )
    if found is None:
        raise _not_found(name, "collection")
    return found


async def collection_for_write(conn: PooledConnection, tenant: str, name: str) -> asyncpg.Record:
    """The id, model and dimension of `tenant`'s collection `name`, kept from deletion (and from a
    migration's switch) until the transaction ends."""
    # KEY SHARE keeps the collection from being deleted under the transaction, yet lets other
    # writers of the same collection bump its generation concurrently.
    row = await conn.fetchrow(
        "SELECT id, embedding_model, dimension FROM collections WHERE tenant = $1 AND name = $2 FOR KEY SHARE",
        tenant,
        name,
    )
    if row is None:
        raise _not_found(name, "collection")
    return row


async def bump_generation(conn: PooledConnection, collection: int) -> int:
    """Counts a change of the collection with id `collection`; its new generation."""
    generation: int = await conn.fetchval(
        "UPDATE collections SET generation = generation + 1 WHERE id = $1 RETURNING generation", collection
    )
    return generation
