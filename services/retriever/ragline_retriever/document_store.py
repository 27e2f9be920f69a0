"""The SQL of documents: upserting one or a batch (only changed chunks are written), reading, listing
and deleting them, and looking up which chunk texts a collection already stores.

Plain async functions that take a connection, as in `jobs.py`. Each write is one transaction
(a batch's documents share one) that also bumps the collection's generation, and marks the
servicer's `Change` as made. Each starts from the tenant's collection (`collection_store`, by
tenant and name); the statements after that work on the ids it returned.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
from google.protobuf import json_format
from prometheus_client import Counter

from ragline.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from ragline.v1 import retriever_service_pb2 as pb
from ragline_retriever import collection_migrations, jobs
from ragline_retriever.chunks import ChunkPlan, NewChunk, StoredChunk, plan_chunks, text_hash
from ragline_retriever.collection_store import bump_generation, collection_for_write
from ragline_retriever.database import PooledConnection
from ragline_retriever.quotas import Growth, QuotaExceeded, TenantQuota, check_quota
from ragline_retriever.state_publisher import Change
from ragline_retriever.validation import in_batch, new_chunks

UPSERTED_CHUNKS = Counter(
    "ragline_retriever_upserted_chunks_total",
    "Chunks of upserted documents, by what the upsert did with them.",
    ["outcome"],
)

_COPY_COLUMNS = (
    "document_id",
    "collection_id",
    "ordinal",
    "text",
    "token_count",
    "content_hash",
    "embedding",
    "metadata",
)
_DOCUMENT_COLUMNS = "id, document_id, metadata, content_hash, chunk_count, created_at, updated_at"


@dataclass(frozen=True)
class Upserted:
    """What an upsert stored and changed."""

    document: asyncpg.Record
    """The document's row after the upsert."""
    plan: ChunkPlan
    """Which chunks were kept, inserted, updated and deleted."""
    generation: int
    """The collection's generation after the upsert."""
    changed: bool
    """Whether the upsert changed anything (chunks, the document's metadata or content hash)."""
    growth: Growth
    """What the upsert added to its tenant's storage."""


async def _reuse_embeddings(
    conn: PooledConnection, collection_id: int, name: str, chunks: list[NewChunk]
) -> None:
    """Fills in the embeddings left out of `chunks` from stored chunks with the same text."""
    missing = {c.content_hash for c in chunks if c.embedding is None}
    if not missing:
        return
    rows = await conn.fetch(
        "SELECT DISTINCT ON (content_hash) content_hash, embedding FROM chunks"
        " WHERE collection_id = $1 AND content_hash = ANY($2::text[])",
        collection_id,
        list(missing),
    )
    stored = {row["content_hash"]: row["embedding"].to_numpy() for row in rows}
    for i, chunk in enumerate(chunks):
        if chunk.embedding is None:
            if chunk.content_hash not in stored:
                raise InvalidArgument(
                    f"chunks[{i}].embedding is empty, and collection {name!r} stores no chunk with the same "
                    "text whose embedding could be reused; send the embedding",
                    field=f"chunks[{i}].embedding",
                )
            chunks[i] = replace(chunk, embedding=stored[chunk.content_hash])


async def _lock_document(
    conn: PooledConnection,
    collection_id: int,
    document_id: str,
    metadata: dict[str, Any],
    content_hash: str,
    chunk_count: int,
) -> tuple[asyncpg.Record, bool]:
    """The document row, locked for this transaction, inserted if new; and whether it was inserted."""
    while True:
        inserted = await conn.fetchrow(
            "INSERT INTO documents (collection_id, document_id, metadata, content_hash, chunk_count)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (collection_id, document_id) DO NOTHING"
            f" RETURNING {_DOCUMENT_COLUMNS}",
            collection_id,
            document_id,
            metadata,
            content_hash,
            chunk_count,
        )
        if inserted is not None:
            return inserted, True
        existing = await conn.fetchrow(
            f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE collection_id = $1 AND document_id = $2 FOR UPDATE",
            collection_id,
            document_id,
        )
        # None only if a concurrent delete won the race between the two statements: insert again.
        if existing is not None:
            return existing, False


async def _write_chunks(conn: PooledConnection, collection_id: int, document: int, plan: ChunkPlan) -> None:
    """Deletes, updates and inserts the chunks of the document with id `document` as `plan` says."""
    if plan.deleted:
        await conn.execute(
            "DELETE FROM chunks WHERE collection_id = $1 AND document_id = $2 AND ordinal >= $3",
            collection_id,
            document,
            plan.delete_from,
        )
    if plan.update:
        await conn.executemany(
            "UPDATE chunks SET text = $4, token_count = $5, content_hash = $6, embedding = $7, metadata = $8"
            " WHERE collection_id = $1 AND document_id = $2 AND ordinal = $3",
            [
                (
                    collection_id,
                    document,
                    c.ordinal,
                    c.text,
                    c.token_count,
                    c.content_hash,
                    c.embedding,
                    c.metadata,
                )
                for c in plan.update
            ],
        )
    if plan.insert:
        # Binary COPY: the fastest way in for large documents; the triggers of migration
        # 0002 fill the full-text columns and postings as for any insert.
        await conn.copy_records_to_table(
            "chunks",
            columns=_COPY_COLUMNS,
            records=[
                (
                    document,
                    collection_id,
                    c.ordinal,
                    c.text,
                    c.token_count,
                    c.content_hash,
                    c.embedding,
                    c.metadata,
                )
                for c in plan.insert
            ],
        )


async def _upsert(
    conn: PooledConnection,
    request: pb.UpsertDocumentRequest,
    document_id: str,
    change: Change,
    embedding_model: str,
    into: str = "",
) -> Upserted:
    """Stores the document's chunks in the request's tenant's collection (or the one named `into`:
    a migration's target), writing only those that changed, in the caller's transaction.

    `embedding_model`, when set, must be the collection's: vectors of two models never mix in one."""
    name = request.collection
    # validate_upsert refused metadata JSON cannot hold (NaN, infinity, NUL, too deep or large).
    metadata = json_format.MessageToDict(request.metadata)
    collection = await collection_for_write(conn, request.tenant, into or name)
    if embedding_model and embedding_model != collection["embedding_model"]:
        raise FailedPrecondition(
            f"collection {name!r} holds vectors of {collection['embedding_model']}, not of {embedding_model} "
            "(it was moved to that model since the texts were embedded); embed them again with it",
            field="embedding_model",
            reason="EMBEDDING_MODEL_CHANGED",
        )
    chunks = new_chunks(request, collection["dimension"])
    await _reuse_embeddings(conn, collection["id"], name, chunks)
    # Without a hash from the caller, the chunks' hashes stand in for the document's text.
    content_hash = request.content_hash or text_hash("".join(c.content_hash for c in chunks))
    document, created = await _lock_document(
        conn, collection["id"], document_id, metadata, content_hash, len(chunks)
    )
    stored = []
    if not created:
        stored = [
            StoredChunk(r["ordinal"], r["content_hash"], r["token_count"], r["metadata"])
            for r in await conn.fetch(
                "SELECT ordinal, content_hash, token_count, metadata FROM chunks"
                " WHERE collection_id = $1 AND document_id = $2",
                collection["id"],
                document["id"],
            )
        ]
    plan = plan_chunks(stored, chunks)
    growth = Growth(1, len(chunks)) if created else Growth(0, len(chunks) - document["chunk_count"])
    await _write_chunks(conn, collection["id"], document["id"], plan)
    document_changed = document["metadata"] != metadata or document["content_hash"] != content_hash
    if not created and (plan.changed or document_changed):
        updated = await conn.fetchrow(
            "UPDATE documents SET metadata = $3, content_hash = $4, chunk_count = $5, updated_at = now()"
            f" WHERE collection_id = $1 AND id = $2 RETURNING {_DOCUMENT_COLUMNS}",
            collection["id"],
            document["id"],
            metadata,
            content_hash,
            len(chunks),
        )
        assert updated is not None  # the row is locked by this transaction
        document = updated
    changed = created or plan.changed or document_changed
    if changed:
        change.made = True
        generation = await bump_generation(conn, collection["id"])
    else:
        generation = await conn.fetchval("SELECT generation FROM collections WHERE id = $1", collection["id"])
    return Upserted(document, plan, generation, changed, growth)


def _count_chunks(plan: ChunkPlan) -> None:
    """Counts what a committed upsert did with its chunks."""
    for outcome, count in (
        ("unchanged", plan.unchanged),
        ("inserted", len(plan.insert)),
        ("updated", len(plan.update)),
        ("deleted", plan.deleted),
    ):
        UPSERTED_CHUNKS.labels(outcome).inc(count)


async def upsert_document(
    conn: PooledConnection,
    request: pb.UpsertDocumentRequest,
    document_id: str,
    change: Change,
    quota: TenantQuota,
) -> Upserted:
    """Stores the document's chunks in one transaction, writing only those that changed, if the
    tenant's quota allows, and finishes the request's ingest claim (if any) in the same transaction.

    A claimed document goes to its job's collection, in its job's tenant: a claim of another
    tenant's job is NOT_FOUND, as an unknown job is. A claimed document over the quota is failed
    for good with the quota's reason: retrying it would fail the same way until someone deletes
    documents.
    """
    try:
        async with conn.transaction():
            upserted = await _upsert_checked(conn, request, document_id, change, quota)
    except QuotaExceeded as exc:
        if request.HasField("claim"):
            await jobs.fail_document(conn, request.claim, exc.message, retry_after=None)
        raise
    _count_chunks(upserted.plan)
    return upserted


async def _upsert_checked(
    conn: PooledConnection,
    request: pb.UpsertDocumentRequest,
    document_id: str,
    change: Change,
    quota: TenantQuota,
) -> Upserted:
    """The upsert of `upsert_document`, in the caller's transaction: the claim's target checked
    before the first write, the quota after the last, and the claim finished last."""
    into = ""
    if request.HasField("claim") and await jobs.check_claim_target(
        conn, request.claim, request.tenant, request.collection
    ):
        job_id = uuid.UUID(request.claim.job_id)  # check_claim_target parsed it
        into = await collection_migrations.migration_target(conn, job_id, request.collection)
    upserted = await _upsert(conn, request, document_id, change, request.embedding_model, into)
    # A migration's copy is not counted: the source it doubles is deleted when it switches.
    if not into:
        await check_quota(conn, request.tenant, quota, upserted.growth)
    if request.HasField("claim"):
        plan = upserted.plan
        await jobs.complete_document(
            conn,
            request.claim,
            skipped=not upserted.changed,
            written_chunks=len(plan.insert) + len(plan.update),
        )
    return upserted


async def upsert_documents(
    conn: PooledConnection,
    request: pb.BatchUpsertDocumentsRequest,
    document_ids: list[str],
    change: Change,
    quota: TenantQuota,
) -> list[Upserted]:
    """Stores every document of the batch in one transaction, or none: the first that fails
    rolls back those before it, and its error names it (`requests[i]`); a batch that would take
    the tenant past its quota stores nothing either."""
    upserted = []
    async with conn.transaction():
        for index, (upsert, document_id) in enumerate(zip(request.requests, document_ids, strict=True)):
            try:
                model = upsert.embedding_model or request.embedding_model
                upserted.append(await _upsert(conn, upsert, document_id, change, model))
            except ServiceError as exc:
                raise in_batch(exc, index, document_id) from None
            except asyncpg.DataError as exc:
                # A value PostgreSQL cannot store (a NaN in metadata, say): the caller's to fix.
                raise in_batch(
                    InvalidArgument(f"holds a value the database refuses ({exc})"), index, document_id
                ) from None
        # The batch as a whole: its documents' growth together.
        growth = Growth(sum(u.growth.documents for u in upserted), sum(u.growth.chunks for u in upserted))
        await check_quota(conn, request.tenant, quota, growth)
    for each in upserted:
        _count_chunks(each.plan)
    return upserted


async def get_document(
    conn: PooledConnection, collection_id: int, name: str, document_id: str
) -> asyncpg.Record:
    """The document `document_id` of the collection `name` (id `collection_id`); NOT_FOUND if none."""
    row = await conn.fetchrow(
        f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE collection_id = $1 AND document_id = $2",
        collection_id,
        document_id,
    )
    if row is None:
        raise NotFound(f"document {document_id!r} does not exist in collection {name!r}", field="document_id")
    return row


async def list_documents(
    conn: PooledConnection, collection_id: int, after: str, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` documents of the collection, by id after the id `after`."""
    return await conn.fetch(
        f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE collection_id = $1 AND document_id > $2"
        " ORDER BY document_id LIMIT $3",
        collection_id,
        after,
        limit,
    )


async def delete_document(
    conn: PooledConnection, tenant: str, name: str, document_id: str, change: Change
) -> tuple[int, int]:
    """Deletes the document of `tenant`'s collection `name` and its chunks in one transaction; the
    chunks deleted and the new generation."""
    async with conn.transaction():
        collection = await collection_for_write(conn, tenant, name)
        deleted: int | None = await conn.fetchval(
            "DELETE FROM documents WHERE collection_id = $1 AND document_id = $2 RETURNING chunk_count",
            collection["id"],
            document_id,
        )
        if deleted is None:
            raise NotFound(
                f"document {document_id!r} does not exist in collection {name!r}", field="document_id"
            )
        change.made = True
        return deleted, await bump_generation(conn, collection["id"])


async def lookup_chunk_hashes(
    conn: PooledConnection, collection_id: int, document_id: str, hashes: list[str]
) -> list[str]:
    """Those of `hashes` the collection stores, in their order; with no hashes, those of the
    document `document_id` by ordinal, without repeats."""
    if document_id:
        rows = await conn.fetch(
            "SELECT c.content_hash FROM chunks AS c"
            " JOIN documents AS d ON d.collection_id = c.collection_id AND d.id = c.document_id"
            " WHERE d.collection_id = $1 AND d.document_id = $2 ORDER BY c.ordinal",
            collection_id,
            document_id,
        )
    else:
        rows = await conn.fetch(
            "SELECT DISTINCT content_hash FROM chunks WHERE collection_id = $1 AND content_hash = ANY($2::text[])",
            collection_id,
            hashes,
        )
    found = list(dict.fromkeys(row["content_hash"] for row in rows))
    if hashes:
        stored = set(found)
        found = [value for value in hashes if value in stored]
    return found
