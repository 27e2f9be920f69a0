"""The SQL of moving a collection to another embedding model while it keeps serving (migration 0009).

A migration is an ingest job whose documents are the source collection's, stored again by the
gateway's workers with the target model's vectors into a hidden *target* collection (its own row,
HNSW index, BM25 postings and statistics). Searches keep reading the source meanwhile, and
writes keep landing in it. When the job has no document left to store, `advance` locks the
source (writers wait; searches do not) and compares the two collections chunk by chunk: what
the source holds otherwise than the target (written since its document was copied) is queued
as another round of the same job, what the target holds that the source no longer has is
deleted; when nothing differs, the same transaction gives the target the source's name and
retires the source, so every search sees the old vectors before that commit and the new ones
after it. The retired collection is deleted after the commit. Cancelling the job deletes the
target and leaves the source as it was.

Plain async functions that take a connection, as in `jobs.py`; `drive` runs `advance` in the
background of every retriever (`periodic.Periodic`; row locks let one of them work on a migration).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable

import asyncpg

from ragline import tracing
from ragline.errors import AlreadyExists, FailedPrecondition, NotFound
from ragline.v1 import common_pb2
from ragline.v1 import ingest_queue_service_pb2 as pb
from ragline_retriever import jobs
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import Database, PooledConnection
from ragline_retriever.search import create_index_sql, drop_index_sql
from ragline_retriever.state_publisher import Change

log = logging.getLogger(__name__)

# Names no caller can send ('~' is not allowed in a collection name), so they never clash with one.
TARGET_PREFIX = "~migration~"
RETIRED_PREFIX = "~retired~"

# The source's documents whose copy in the target is missing or differs: another content hash,
# other metadata, another number of chunks, or a chunk of another text or metadata.
_STALE_SQL = """
    SELECT s.document_id FROM documents AS s
    LEFT JOIN documents AS t ON t.collection_id = $2 AND t.document_id = s.document_id
    WHERE s.collection_id = $1 AND (
        t.id IS NULL OR t.content_hash <> s.content_hash OR t.metadata <> s.metadata
        OR t.chunk_count <> s.chunk_count
        OR EXISTS (
            SELECT 1 FROM chunks AS sc
            JOIN chunks AS tc ON tc.collection_id = $2 AND tc.document_id = t.id AND tc.ordinal = sc.ordinal
            WHERE sc.collection_id = $1 AND sc.document_id = s.id
              AND (tc.content_hash <> sc.content_hash OR tc.metadata <> sc.metadata)))
    ORDER BY s.document_id
"""
# The target's documents the source no longer has (deleted while the job ran).
_GONE_SQL = """
    DELETE FROM documents AS t
    WHERE t.collection_id = $2
      AND NOT EXISTS (SELECT 1 FROM documents AS s WHERE s.collection_id = $1 AND s.document_id = t.document_id)
"""
# A migration's documents as a claim hands them out: the source's stored chunks, without vectors.
_CLAIMED_CHUNKS_SQL = """
    SELECT d.document_id, d.metadata AS document_metadata, d.content_hash, c.text, c.token_count, c.metadata
    FROM collection_migrations AS m
    JOIN documents AS d ON d.collection_id = m.source_id
    JOIN chunks AS c ON c.collection_id = d.collection_id AND c.document_id = d.id
    WHERE m.job_id = $1 AND d.document_id = ANY($2::text[])
    ORDER BY d.document_id, c.ordinal
"""


async def start(
    conn: PooledConnection,
    config: RetrieverConfig,
    tenant: str,
    name: str,
    embedding_model: str,
    dimension: int,
) -> common_pb2.IngestJob:
    """Starts moving `tenant`'s collection `name` to `embedding_model`: the target collection with
    its index, and the job that fills it with every document the source holds now."""
    async with conn.transaction():
        source = await conn.fetchrow(
            "SELECT id, embedding_model FROM collections WHERE tenant = $1 AND name = $2 FOR KEY SHARE",
            tenant,
            name,
        )
        if source is None:
            raise NotFound(f"collection {name!r} does not exist", field="name")
        if source["embedding_model"] == embedding_model:
            raise FailedPrecondition(
                f"collection {name!r} already holds vectors of {embedding_model}; name another model",
                field="embedding_model",
            )
        running = await conn.fetchval(
            "SELECT job_id FROM collection_migrations WHERE source_id = $1", source["id"]
        )
        if running is not None:
            raise AlreadyExists(
                f"collection {name!r} is already being migrated by ingest job {running}; wait for it or cancel it",
                field="name",
            )
        target_id: int = await conn.fetchval(
            "INSERT INTO collections (tenant, name, embedding_model, dimension) VALUES ($1, $2, $3, $4) RETURNING id",
            tenant,
            f"{TARGET_PREFIX}{source['id']}",
            embedding_model,
            dimension,
        )
        job_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO ingest_jobs (tenant, collection, trace_parent, migration_source_model,"
            " migration_target_model, migration_target_dimension) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            tenant,
            name,
            tracing.traceparent(),
            source["embedding_model"],
            embedding_model,
            dimension,
        )
        await conn.execute(
            "INSERT INTO collection_migrations (job_id, source_id, target_id) VALUES ($1, $2, $3)",
            job_id,
            source["id"],
            target_id,
        )
        await _queue(conn, job_id, source["id"], None)
    try:
        await conn.execute(f"SET maintenance_work_mem = '{config.maintenance_work_mem}'")
        await conn.execute(create_index_sql(target_id, dimension, config.hnsw_m, config.hnsw_ef_construction))
    except asyncpg.PostgresError:
        await abandon(conn, job_id, "the target collection's vector index could not be built")
        raise
    finally:
        await conn.execute("RESET maintenance_work_mem")
    return await jobs.get_job(conn, tenant, job_id)


async def _queue(
    conn: PooledConnection, job_id: uuid.UUID, source_id: int, document_ids: list[str] | None
) -> int:
    """Adds documents of the source (all of them when `document_ids` is None) to the job; how many."""
    added: int = await conn.fetchval(
        "WITH job AS (SELECT total_documents FROM ingest_jobs WHERE id = $1 FOR UPDATE),"
        " added AS (INSERT INTO ingest_job_documents (job_id, ordinal, document_id)"
        "  SELECT $1, (SELECT total_documents FROM job) + row_number() OVER (ORDER BY document_id) - 1, document_id"
        "  FROM documents WHERE collection_id = $2 AND ($3::text[] IS NULL OR document_id = ANY($3::text[]))"
        "  RETURNING 1)"
        " SELECT count(*) FROM added",
        job_id,
        source_id,
        document_ids,
    )
    await conn.execute(
        "UPDATE ingest_jobs SET total_documents = total_documents + $2 WHERE id = $1", job_id, added
    )
    return added


async def migration_target(conn: PooledConnection, job_id: uuid.UUID, collection: str) -> str:
    """The hidden target collection (`collection_migrations`) a claimed document of the migration
    job `job_id` is stored in; FAILED_PRECONDITION once the migration was cancelled or switched."""
    target: str | None = await conn.fetchval(
        "SELECT t.name FROM collection_migrations AS m JOIN collections AS t ON t.id = m.target_id WHERE m.job_id = $1",
        job_id,
    )
    if target is None:
        raise FailedPrecondition(
            f"the migration of collection {collection!r} by ingest job {job_id} is no longer running "
            "(cancelled or finished); the document is not needed",
            field="claim.job_id",
        )
    return target


async def fill_claimed(conn: PooledConnection, claimed: list[pb.ClaimedDocument]) -> list[pb.ClaimedDocument]:
    """Gives each claimed document of a migration job the source's stored chunks; one the source
    no longer holds is finished as skipped (the switch deletes its copy) and left out."""
    kept: list[pb.ClaimedDocument] = []
    by_job: dict[str, list[pb.ClaimedDocument]] = {}
    for item in claimed:
        if item.HasField("migration"):
            by_job.setdefault(item.claim.job_id, []).append(item)
        else:
            kept.append(item)
    for job_id, items in by_job.items():
        rows = await conn.fetch(
            _CLAIMED_CHUNKS_SQL, uuid.UUID(job_id), [i.document.document_id for i in items]
        )
        found: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            found.setdefault(row["document_id"], []).append(row)
        for item in items:
            chunks = found.get(item.document.document_id)
            if not chunks:
                await jobs.complete_document(conn, item.claim, skipped=True, written_chunks=0)
                continue
            item.document.metadata.update(chunks[0]["document_metadata"])
            item.content_hash = chunks[0]["content_hash"]
            for row in chunks:
                chunk = item.chunks.add(text=row["text"], token_count=row["token_count"])
                chunk.metadata.update(row["metadata"])
            kept.append(item)
    return kept


async def abandon(conn: PooledConnection, job_id: uuid.UUID, reason: str) -> None:
    """Deletes the migration's target (the source is untouched) and ends its job with `reason`."""
    async with conn.transaction():
        target_id = await conn.fetchval(
            "DELETE FROM collection_migrations WHERE job_id = $1 RETURNING target_id", job_id
        )
        if target_id is not None:
            await conn.execute("DELETE FROM collections WHERE id = $1", target_id)
        await conn.execute(
            "UPDATE ingest_jobs SET status_message = $2, finished_at = coalesce(finished_at, clock_timestamp())"
            " WHERE id = $1",
            job_id,
            reason,
        )
    if target_id is not None:
        await conn.execute(drop_index_sql(target_id))


async def cancelled(conn: PooledConnection, job: common_pb2.IngestJob) -> None:
    """After `jobs.cancel_job`: a cancelled migration job's target is deleted, the source untouched."""
    if job.HasField("migration") and job.state == common_pb2.INGEST_JOB_STATE_CANCELLED:
        await abandon(conn, uuid.UUID(job.job_id), job.status_message)


async def advance(conn: PooledConnection, job_id: uuid.UUID) -> bool:
    """One step of a migration whose job has no document left to store: another round with the
    documents that differ, or the switch; whether the switch happened. A migration with documents
    that failed for good is abandoned instead: another round would fail the same way."""
    async with conn.transaction():
        # SKIP LOCKED: another retriever advancing the same migration is left to it.
        migration = await conn.fetchrow(
            "SELECT m.source_id, m.target_id, j.failed_documents, j.migration_target_model"
            " FROM collection_migrations AS m JOIN ingest_jobs AS j ON j.id = m.job_id"
            " WHERE m.job_id = $1 AND NOT EXISTS ("
            "  SELECT 1 FROM ingest_job_documents WHERE job_id = $1 AND state IN ('queued', 'running'))"
            " FOR UPDATE OF m SKIP LOCKED",
            job_id,
        )
        if migration is None or migration["failed_documents"]:
            failed = migration is not None
        else:
            failed = False
            # Writers of the source hold KEY SHARE on it: once this lock is granted none is under
            # way, and none starts until the commit. Searches take no lock and go on.
            source = await conn.fetchrow(
                "SELECT name, generation FROM collections WHERE id = $1 FOR UPDATE", migration["source_id"]
            )
            assert source is not None  # deleting the source deletes its migration row (ON DELETE CASCADE)
            ids = (migration["source_id"], migration["target_id"])
            await conn.execute(_GONE_SQL, *ids)
            stale = [row["document_id"] for row in await conn.fetch(_STALE_SQL, *ids)]
            if stale:
                added = await _queue(conn, job_id, migration["source_id"], stale)
                await conn.execute(
                    "UPDATE collection_migrations SET rounds = rounds + 1 WHERE job_id = $1", job_id
                )
                log.info(
                    "migration %s: %d documents changed while it ran; embedding them again", job_id, added
                )
                return False
            await _switch(conn, job_id, ids, source, migration["migration_target_model"])
            return True
    if failed:
        assert migration is not None
        await abandon(
            conn,
            job_id,
            f"{migration['failed_documents']} documents could not be embedded again (see the job's failures); "
            "the migration was abandoned and the collection is unchanged; start it again once they can",
        )
    return False


async def _switch(
    conn: PooledConnection, job_id: uuid.UUID, ids: tuple[int, int], source: asyncpg.Record, model: str
) -> None:
    """Gives the target the source's name and retires the source, in the caller's transaction."""
    source_id, target_id = ids
    await conn.execute(
        "UPDATE collections SET name = $2 WHERE id = $1", source_id, f"{RETIRED_PREFIX}{source_id}"
    )
    # Generations never go back under a name, whichever collection holds it.
    await conn.execute(
        "UPDATE collections SET name = $2, generation = greatest(generation, $3) + 1 WHERE id = $1",
        target_id,
        source["name"],
        source["generation"],
    )
    await conn.execute("DELETE FROM collection_migrations WHERE job_id = $1", job_id)
    await conn.execute(
        "UPDATE ingest_jobs SET status_message = $2, finished_at = clock_timestamp() WHERE id = $1",
        job_id,
        f"collection {source['name']!r} now serves vectors of {model}",
    )


async def delete_retired(conn: PooledConnection) -> int:
    """Deletes the collections retired by switches (their rows, then their indexes); how many."""
    retired = await conn.fetch("SELECT id FROM collections WHERE name LIKE $1", f"{RETIRED_PREFIX}%")
    for row in retired:
        await conn.execute("DELETE FROM collections WHERE id = $1", row["id"])
        await conn.execute(drop_index_sql(row["id"]))
    return len(retired)


async def drive(
    database: Database, changing: Callable[[str, str], contextlib.AbstractAsyncContextManager[Change]]
) -> None:
    """Advances every migration whose job has nothing left to store, then deletes retired collections.

    `changing(tenant, name)` is the servicer's announcement of a change (`StatePublisher.changing`):
    a switch is a change of the collection, which gateways must not serve from an older state.
    """
    async with database.connection() as conn:
        running = await conn.fetch(
            "SELECT m.job_id, j.tenant, j.collection FROM collection_migrations AS m"
            " JOIN ingest_jobs AS j ON j.id = m.job_id"
        )
        for row in running:
            async with changing(row["tenant"], row["collection"]) as change:
                change.made = await advance(conn, row["job_id"])
            if change.made:
                log.info(
                    "collection %r of tenant %r switched models (ingest job %s)",
                    row["collection"],
                    row["tenant"],
                    row["job_id"],
                )
        await delete_retired(conn)
