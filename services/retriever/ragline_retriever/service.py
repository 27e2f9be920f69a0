"""The `ragline.v1.RetrieverService` servicer: validates requests and runs them against PostgreSQL.

Every RPC is one database transaction, so a call either happens completely or not at all;
requests are checked before anything is written, and errors name the field to fix.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from numpy.typing import NDArray
from prometheus_client import Counter, Gauge, Histogram

from ragline.errors import AlreadyExists, InvalidArgument, NotFound
from ragline.metrics import LATENCY_BUCKETS, SEARCH_MODE_LABELS
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever import jobs
from ragline_retriever.chunks import NewChunk, StoredChunk, plan_chunks, text_hash
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import Database, PooledConnection
from ragline_retriever.filters import Params, compile_filter
from ragline_retriever.search import (
    HYBRID_FILTER_PARAMS,
    KEYWORD_FILTER_PARAMS,
    METADATA_SQL,
    MIN_CANDIDATES,
    VECTOR_FILTER_PARAMS,
    Hit,
    create_index_sql,
    drop_index_sql,
    hit_from_row,
    hybrid_search_sql,
    keyword_search_sql,
    vector_search_sql,
)
from ragline_retriever.state_publisher import StatePublisher

QUERY_SECONDS = Histogram(
    "ragline_retriever_query_seconds",
    "Time the database took to answer one search, by search mode.",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
UPSERTED_CHUNKS = Counter(
    "ragline_retriever_upserted_chunks_total",
    "Chunks of upserted documents, by what the upsert did with them.",
    ["outcome"],
)

INGEST_QUEUE_DOCUMENTS = Gauge(
    "ragline_ingest_queue_documents",
    "Ingest job documents waiting for a worker (queued) or being processed (running), read every few seconds.",
    ["state"],
)
INGEST_OLDEST_QUEUED_AGE = Gauge(
    "ragline_ingest_oldest_queued_age_seconds",
    "How long the oldest due ingest document has waited for a worker; 0 when none waits.",
)

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_DIMENSION = 4000
MAX_DOCUMENT_ID_LENGTH = 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
# pgvector's bounds of hnsw.ef_search.
MAX_EF_SEARCH = 1000
MAX_BM25_K1 = 10.0
MAX_RRF_K = 1000
MAX_FUSION_WEIGHT = 100.0
MAX_LOOKUP_HASHES = 10_000
# Embeddings are indexed as halfvec (16-bit floats), which cannot hold larger magnitudes.
HALFVEC_MAX = 65504.0
# Collections whose id and dimension hybrid search remembers.
MAX_LOCATED_COLLECTIONS = 10_000

# The first parameter number of a compiled filter's values in each mode's statement.
_FILTER_PARAMS = {
    common_pb2.SEARCH_MODE_VECTOR: VECTOR_FILTER_PARAMS,
    common_pb2.SEARCH_MODE_KEYWORD: KEYWORD_FILTER_PARAMS,
    common_pb2.SEARCH_MODE_HYBRID: HYBRID_FILTER_PARAMS,
}

_COLLECTION_SQL = """
    SELECT c.id, c.name, c.embedding_model, c.dimension, c.generation, c.created_at,
           s.document_count, s.chunk_count
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
class _Located:
    """What a search needs to know of a collection before its one statement."""

    id: int
    dimension: int


@dataclass(frozen=True)
class _Search:
    """One SearchChunks call, validated, with its filter compiled."""

    name: str
    request: pb.SearchChunksRequest
    options: SearchOptions
    mode: common_pb2.SearchMode
    top_k: int
    condition: str | None
    params: Params


@dataclass(frozen=True)
class SearchOptions:
    """The tuning of one search: the request's values or the configured defaults."""

    ef_search: int
    rrf_k: int
    bm25_k1: float
    bm25_b: float
    vector_weight: float
    keyword_weight: float


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _collection_pb(row: asyncpg.Record) -> common_pb2.Collection:
    return common_pb2.Collection(
        name=row["name"],
        embedding_model=row["embedding_model"],
        dimension=row["dimension"],
        distance=common_pb2.DISTANCE_METRIC_COSINE,
        generation=row["generation"],
        document_count=row["document_count"],
        chunk_count=row["chunk_count"],
        create_time=_timestamp(row["created_at"]),
    )


def _document_pb(collection: str, row: asyncpg.Record) -> common_pb2.Document:
    return common_pb2.Document(
        collection=collection,
        document_id=row["document_id"],
        metadata=_struct(row["metadata"]),
        content_hash=row["content_hash"],
        chunk_count=row["chunk_count"],
        create_time=_timestamp(row["created_at"]),
        update_time=_timestamp(row["updated_at"]),
    )


def _hit_pb(hit: Hit) -> common_pb2.SearchHit:
    return common_pb2.SearchHit(
        chunk_id=str(hit.chunk_id),
        document_id=hit.document_id,
        ordinal=hit.ordinal,
        text=hit.text,
        score=hit.score,
        metadata=_struct(hit.metadata),
        matched_modes=hit.modes,
    )


def validate_collection_name(name: str, field: str) -> str:
    """`name` if it is a valid collection name, else INVALID_ARGUMENT on `field`."""
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"{field} {name!r} is not a valid collection name: use 1 to 63 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
            field=field,
        )
    return name


def _validate_document_id(document_id: str) -> str:
    if not document_id:
        raise InvalidArgument("document_id is empty", field="document_id")
    if len(document_id) > MAX_DOCUMENT_ID_LENGTH or "\x00" in document_id:
        raise InvalidArgument(
            f"document_id must be at most {MAX_DOCUMENT_ID_LENGTH} characters without NUL characters",
            field="document_id",
        )
    return document_id


def _page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be from 1 to {MAX_PAGE_SIZE} (0 means 100)", field="page_size")
    return value


def encode_page_token(scope: str, after: str) -> str:
    """An opaque token for the page that starts after the key `after` of a listing of `scope`."""
    return base64.urlsafe_b64encode(json.dumps([scope, after]).encode()).decode()


def decode_page_token(token: str, scope: str) -> str:
    """The key after which the page of `token` starts ("" for no token); INVALID_ARGUMENT if it is not ours."""
    if not token:
        return ""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error):
        decoded = None
    if not (
        isinstance(decoded, list)
        and len(decoded) == 2
        and decoded[0] == scope
        and isinstance(decoded[1], str)
    ):
        raise InvalidArgument(
            "page_token is not a next_page_token of this listing; send it back unchanged or leave it empty",
            field="page_token",
        )
    return decoded[1]


def _embedding(values: Sequence[float], dimension: int, field: str, collection: str) -> NDArray[np.float32]:
    if len(values) != dimension:
        raise InvalidArgument(
            f"{field} has {len(values)} values but collection {collection!r} has dimension {dimension}",
            field=field,
        )
    array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all() or float(np.abs(array).max()) > HALFVEC_MAX:
        raise InvalidArgument(f"{field} must hold finite values within ±{HALFVEC_MAX:g}", field=field)
    if not array.any():
        raise InvalidArgument(f"{field} is all zeros, which has no cosine distance to anything", field=field)
    return array


def _new_chunks(request: pb.UpsertDocumentRequest, dimension: int) -> list[NewChunk]:
    """The request's chunks, validated; those sent without an embedding have `embedding` None."""
    chunks = []
    for i, chunk in enumerate(request.chunks):
        if not chunk.text or "\x00" in chunk.text:
            raise InvalidArgument(
                f"chunks[{i}].text is empty or has NUL characters", field=f"chunks[{i}].text"
            )
        if chunk.token_count < 0:
            raise InvalidArgument(f"chunks[{i}].token_count is negative", field=f"chunks[{i}].token_count")
        embedding = (
            _embedding(chunk.embedding, dimension, f"chunks[{i}].embedding", request.collection)
            if chunk.embedding
            else None
        )
        chunks.append(
            NewChunk(
                ordinal=i,
                text=chunk.text,
                content_hash=text_hash(chunk.text),
                token_count=chunk.token_count,
                metadata=json_format.MessageToDict(chunk.metadata),
                embedding=embedding,
            )
        )
    return chunks


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


async def _collection_for_write(conn: PooledConnection, name: str) -> asyncpg.Record:
    # KEY SHARE keeps the collection from being deleted under the transaction, yet lets other
    # writers of the same collection bump its generation concurrently.
    row = await conn.fetchrow("SELECT id, dimension FROM collections WHERE name = $1 FOR KEY SHARE", name)
    if row is None:
        raise NotFound(f"collection {name!r} does not exist", field="collection")
    return row


async def _bump_generation(conn: PooledConnection, collection_id: int) -> int:
    generation: int = await conn.fetchval(
        "UPDATE collections SET generation = generation + 1 WHERE id = $1 RETURNING generation", collection_id
    )
    return generation


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


class RetrieverServicer(pb_grpc.RetrieverServiceServicer):
    """Serves collections, documents and search from the database opened by `start()`."""

    def __init__(self, config: RetrieverConfig, database: Database) -> None:
        self._config = config
        self._db = database
        self._located: dict[str, _Located] = {}
        self._publisher = StatePublisher(
            config.redis_url,
            lease_seconds=config.state_lease_seconds,
            timeout_seconds=config.redis_timeout_seconds,
        )

    async def start(self) -> None:
        """Connects to (or starts) PostgreSQL and migrates it, while health reports NOT_SERVING."""
        await self._db.start()

    async def check_ready(self) -> None:
        """Raises while the database does not answer; refreshes the ingest queue gauges when it does."""
        await self._db.check_ready()
        async with self._db.connection() as conn:
            queued, running, oldest = await jobs.queue_stats(conn)
        INGEST_QUEUE_DOCUMENTS.labels("queued").set(queued)
        INGEST_QUEUE_DOCUMENTS.labels("running").set(running)
        INGEST_OLDEST_QUEUED_AGE.set(oldest)

    async def stop(self) -> None:
        """Closes the pool and stops the embedded PostgreSQL if this process started it."""
        await self._db.stop()
        await self._publisher.close()

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        name = validate_collection_name(request.name, "name")
        if not 1 <= request.dimension <= MAX_DIMENSION:
            raise InvalidArgument(f"dimension must be from 1 to {MAX_DIMENSION}", field="dimension")
        if request.distance not in (
            common_pb2.DISTANCE_METRIC_UNSPECIFIED,
            common_pb2.DISTANCE_METRIC_COSINE,
        ):
            raise InvalidArgument(
                "distance must be DISTANCE_METRIC_COSINE (the only one supported)", field="distance"
            )
        try:
            async with self._publisher.changing(name) as change, self._db.connection() as conn:
                change.made = True
                row = await conn.fetchrow(
                    "INSERT INTO collections (name, embedding_model, dimension) VALUES ($1, $2, $3)"
                    " RETURNING id, name, embedding_model, dimension, generation, created_at,"
                    " 0::bigint AS document_count, 0::bigint AS chunk_count",
                    name,
                    request.embedding_model,
                    request.dimension,
                )
                assert row is not None  # INSERT ... RETURNING returns the row or raises
                try:
                    # For the session, as CONCURRENTLY runs outside a transaction; reset below, since
                    # the pool does not reset connections (see Database).
                    await conn.execute(f"SET maintenance_work_mem = '{self._config.maintenance_work_mem}'")
                    await conn.execute(
                        create_index_sql(
                            row["id"],
                            request.dimension,
                            self._config.hnsw_m,
                            self._config.hnsw_ef_construction,
                        )
                    )
                except asyncpg.PostgresError:
                    # A failed concurrent build leaves an invalid index behind; remove it with the row.
                    await conn.execute(drop_index_sql(row["id"]))
                    await conn.execute("DELETE FROM collections WHERE id = $1", row["id"])
                    raise
                finally:
                    await conn.execute("RESET maintenance_work_mem")
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"collection {name!r} already exists", field="name") from None
        return pb.CreateCollectionResponse(collection=_collection_pb(row))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        name = validate_collection_name(request.name, "name")
        if request.view not in pb.CollectionView.values():
            raise InvalidArgument(f"unknown collection view {request.view}", field="view")
        basic = request.view == pb.COLLECTION_VIEW_BASIC
        # The basic view is what a gateway asks for on a query: published for the next ones.
        publication = await self._publisher.begin(name) if basic else None
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                f"{_COLLECTION_BASIC_SQL if basic else _COLLECTION_SQL} WHERE c.name = $1", name
            )
        if row is None:
            raise NotFound(f"collection {name!r} does not exist", field="name")
        collection = _collection_pb(row)
        if publication is not None:
            self._publisher.publish_later(publication, collection)
        return pb.GetCollectionResponse(collection=collection)

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        page_size = _page_size(request.page_size)
        after = decode_page_token(request.page_token, "collections")
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"{_COLLECTION_SQL} WHERE c.name > $1 ORDER BY c.name LIMIT $2", after, page_size + 1
            )
        next_token = (
            encode_page_token("collections", rows[page_size - 1]["name"]) if len(rows) > page_size else ""
        )
        return pb.ListCollectionsResponse(
            collections=[_collection_pb(row) for row in rows[:page_size]], next_page_token=next_token
        )

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        name = validate_collection_name(request.name, "name")
        async with self._publisher.changing(name) as change, self._db.connection() as conn:
            async with conn.transaction():
                collection_id = await conn.fetchval(
                    "SELECT id FROM collections WHERE name = $1 FOR UPDATE", name
                )
                if collection_id is None:
                    raise NotFound(f"collection {name!r} does not exist", field="name")
                documents = await conn.fetchval(
                    "SELECT count(*) FROM documents WHERE collection_id = $1", collection_id
                )
                change.made = True
                await conn.execute("DELETE FROM collections WHERE id = $1", collection_id)
            # After the commit and CONCURRENTLY: searches of other collections never wait for it.
            await conn.execute(drop_index_sql(collection_id))
        return pb.DeleteCollectionResponse(deleted_documents=documents)

    async def UpsertDocument(
        self, request: pb.UpsertDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertDocumentResponse:
        name = validate_collection_name(request.collection, "collection")
        document_id = _validate_document_id(request.document_id)
        if not request.chunks:
            raise InvalidArgument("a document needs at least one chunk", field="chunks")
        if request.content_hash and not SHA256_HEX.match(request.content_hash):
            raise InvalidArgument("content_hash must be a lowercase SHA-256 hex digest", field="content_hash")
        metadata = json_format.MessageToDict(request.metadata)
        if request.HasField("claim"):
            jobs.validate_claim(request.claim)
        async with (
            self._publisher.changing(name) as change,
            self._db.connection() as conn,
            conn.transaction(),
        ):
            collection = await _collection_for_write(conn, name)
            chunks = _new_chunks(request, collection["dimension"])
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
                        "SELECT ordinal, content_hash, token_count, metadata FROM chunks WHERE document_id = $1",
                        document["id"],
                    )
                ]
            plan = plan_chunks(stored, chunks)
            if plan.deleted:
                await conn.execute(
                    "DELETE FROM chunks WHERE document_id = $1 AND ordinal >= $2",
                    document["id"],
                    plan.delete_from,
                )
            if plan.update:
                await conn.executemany(
                    "UPDATE chunks SET text = $3, token_count = $4, content_hash = $5, embedding = $6, metadata = $7"
                    " WHERE document_id = $1 AND ordinal = $2",
                    [
                        (
                            document["id"],
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
                            document["id"],
                            collection["id"],
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
            document_changed = document["metadata"] != metadata or document["content_hash"] != content_hash
            if not created and (plan.changed or document_changed):
                updated = await conn.fetchrow(
                    "UPDATE documents SET metadata = $2, content_hash = $3, chunk_count = $4, updated_at = now()"
                    f" WHERE id = $1 RETURNING {_DOCUMENT_COLUMNS}",
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
                generation = await _bump_generation(conn, collection["id"])
            else:
                generation = await conn.fetchval(
                    "SELECT generation FROM collections WHERE id = $1", collection["id"]
                )
            if request.HasField("claim"):
                await jobs.complete_document(
                    conn,
                    request.claim,
                    skipped=not changed,
                    written_chunks=len(plan.insert) + len(plan.update),
                )
        for outcome, count in (
            ("unchanged", plan.unchanged),
            ("inserted", len(plan.insert)),
            ("updated", len(plan.update)),
            ("deleted", plan.deleted),
        ):
            UPSERTED_CHUNKS.labels(outcome).inc(count)
        return pb.UpsertDocumentResponse(
            document=_document_pb(name, document),
            unchanged_chunks=plan.unchanged,
            inserted_chunks=len(plan.insert),
            updated_chunks=len(plan.update),
            deleted_chunks=plan.deleted,
            generation=generation,
        )

    async def SearchChunks(
        self, request: pb.SearchChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchChunksResponse:
        name = validate_collection_name(request.collection, "collection")
        mode = request.mode or common_pb2.SEARCH_MODE_HYBRID
        if mode not in SEARCH_MODE_LABELS:
            raise InvalidArgument(f"unknown search mode {request.mode}", field="mode")
        top_k = request.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(
                f"top_k must be from 1 to {MAX_TOP_K} (0 means {DEFAULT_TOP_K})", field="top_k"
            )
        use_vector = mode in (common_pb2.SEARCH_MODE_VECTOR, common_pb2.SEARCH_MODE_HYBRID)
        use_keyword = mode in (common_pb2.SEARCH_MODE_KEYWORD, common_pb2.SEARCH_MODE_HYBRID)
        if use_keyword and not request.query_text.strip():
            raise InvalidArgument(
                f"query_text is empty; {SEARCH_MODE_LABELS[mode]} search needs it", field="query_text"
            )
        if use_vector and not request.query_embedding:
            raise InvalidArgument(
                f"query_embedding is empty; {SEARCH_MODE_LABELS[mode]} search needs it",
                field="query_embedding",
            )
        if "\x00" in request.query_text:
            raise InvalidArgument("query_text has NUL characters", field="query_text")
        options = self._search_options(request)
        started = time.perf_counter()
        hits, generation = await self._search(name, request, options, mode, top_k)
        QUERY_SECONDS.labels(SEARCH_MODE_LABELS[mode]).observe(time.perf_counter() - started)
        return pb.SearchChunksResponse(hits=[_hit_pb(hit) for hit in hits], generation=generation)

    async def _search(
        self,
        name: str,
        request: pb.SearchChunksRequest,
        options: SearchOptions,
        mode: common_pb2.SearchMode,
        top_k: int,
    ) -> tuple[list[Hit], int]:
        """The hits of a search and the generation of the snapshot it read, in one statement
        (`search.py`), which needs the collection's id and dimension: remembered from the
        collection's previous search, and looked up again when the statement finds them stale."""
        # Compiled before touching the database, so a malformed filter is always INVALID_ARGUMENT.
        params = Params(_FILTER_PARAMS[mode])
        condition = (
            compile_filter(request.filter, METADATA_SQL, params) if request.HasField("filter") else None
        )
        async with self._db.connection() as conn:
            located = self._located.get(name)
            # A remembered dimension the embedding does not match may belong to a deleted collection.
            embeds = mode != common_pb2.SEARCH_MODE_KEYWORD
            if located is None or (embeds and located.dimension != len(request.query_embedding)):
                located = await self._locate(conn, name)
            search = _Search(name, request, options, mode, top_k, condition, params)
            rows = await self._run_search(conn, search, located)
            if not rows:
                # The id no longer names the collection `name` (deleted, perhaps created again).
                rows = await self._run_search(conn, search, await self._locate(conn, name))
        if not rows:
            raise NotFound(f"collection {name!r} does not exist", field="collection")
        hits = [hit for hit in map(hit_from_row, rows) if hit is not None]
        return hits, rows[0]["generation"]

    async def _run_search(
        self, conn: PooledConnection, search: _Search, located: _Located
    ) -> list[asyncpg.Record]:
        """The rows of `search`'s statement on the collection `located`; none if that id no longer
        names the collection."""
        request, options = search.request, search.options
        ef_search = None
        if search.mode == common_pb2.SEARCH_MODE_KEYWORD:
            sql = keyword_search_sql(located.id, search.condition)
            args: tuple[Any, ...] = (
                request.query_text,
                search.name,
                search.top_k,
                options.bm25_k1,
                options.bm25_b,
            )
        else:
            query = _embedding(request.query_embedding, located.dimension, "query_embedding", search.name)
            if search.mode == common_pb2.SEARCH_MODE_VECTOR:
                sql = vector_search_sql(located.id, located.dimension, search.condition or "TRUE")
                args = (query, search.name, search.top_k)
                ef_search = max(search.top_k, options.ef_search)
            else:
                # Fusion needs deeper lists than top_k to rank well.
                candidates = max(search.top_k, MIN_CANDIDATES)
                sql = hybrid_search_sql(located.id, located.dimension, search.condition)
                args = (
                    request.query_text,
                    search.name,
                    candidates,
                    options.bm25_k1,
                    options.bm25_b,
                    query,
                    float(options.rrf_k),
                    search.top_k,
                    options.vector_weight,
                    options.keyword_weight,
                )
                ef_search = max(candidates, options.ef_search)
        args = (*args, *search.params.values)
        filtered = search.condition is not None
        if ef_search is None or self._session_scan(ef_search, filtered):
            # One round trip, in one snapshot.
            return await conn.fetch(sql, *args)
        async with conn.transaction(readonly=True):
            await self._set_scan(conn, ef_search, filtered)
            return await conn.fetch(sql, *args)

    async def _locate(self, conn: PooledConnection, name: str) -> _Located:
        """The id and dimension of the collection `name` (NOT_FOUND if none), remembered for later searches."""
        row = await conn.fetchrow("SELECT id, dimension FROM collections WHERE name = $1", name)
        if row is None:
            self._located.pop(name, None)
            raise NotFound(f"collection {name!r} does not exist", field="collection")
        if len(self._located) >= MAX_LOCATED_COLLECTIONS:
            self._located.clear()
        located = self._located[name] = _Located(row["id"], row["dimension"])
        return located

    def _session_scan(self, ef_search: int, filtered: bool) -> bool:
        """Whether the session's HNSW scan settings (see Database) are those a search needs."""
        return ef_search == self._config.hnsw_ef_search and not filtered

    async def _set_scan(self, conn: PooledConnection, ef_search: int, filtered: bool) -> None:
        """Sets the HNSW scan of the transaction's vector query where it differs from the session's.

        Without an iterative scan the HNSW scan yields at most ef_search rows, so ef_search is
        never below the rows asked for; with a filter it goes on until enough rows pass it.
        """
        if ef_search != self._config.hnsw_ef_search:
            await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", str(ef_search))
        if filtered:
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")

    def _search_options(self, request: pb.SearchChunksRequest) -> SearchOptions:
        """The request's tuning knobs, validated, with the configured defaults for those left unset."""
        if not 0 <= request.ef_search <= MAX_EF_SEARCH:
            raise InvalidArgument(
                f"ef_search must be from 1 to {MAX_EF_SEARCH} (0 means {self._config.hnsw_ef_search})",
                field="ef_search",
            )
        if not 0 <= request.rrf_k <= MAX_RRF_K:
            raise InvalidArgument(
                f"rrf_k must be from 1 to {MAX_RRF_K} (0 means {self._config.rrf_k})", field="rrf_k"
            )
        bounds = {
            "bm25_k1": (0.0, MAX_BM25_K1, self._config.bm25_k1),
            "bm25_b": (0.0, 1.0, self._config.bm25_b),
            "vector_weight": (0.0, MAX_FUSION_WEIGHT, 1.0),
            "keyword_weight": (0.0, MAX_FUSION_WEIGHT, 1.0),
        }
        values = {}
        for field, (low, high, default) in bounds.items():
            value = getattr(request, field) if request.HasField(field) else default
            if not (math.isfinite(value) and low <= value <= high):
                raise InvalidArgument(f"{field} must be from {low:g} to {high:g}", field=field)
            values[field] = value
        return SearchOptions(
            ef_search=request.ef_search or self._config.hnsw_ef_search,
            rrf_k=request.rrf_k or self._config.rrf_k,
            **values,
        )

    async def LookupChunkHashes(
        self, request: pb.LookupChunkHashesRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupChunkHashesResponse:
        name = validate_collection_name(request.collection, "collection")
        document_id = _validate_document_id(request.document_id) if request.document_id else ""
        hashes = list(dict.fromkeys(request.content_hashes))
        if len(hashes) > MAX_LOOKUP_HASHES:
            raise InvalidArgument(
                f"content_hashes has {len(hashes)} hashes; look up at most {MAX_LOOKUP_HASHES} at a time",
                field="content_hashes",
            )
        for i, value in enumerate(request.content_hashes):
            if not SHA256_HEX.match(value):
                raise InvalidArgument(
                    f"content_hashes[{i}] is not a lowercase SHA-256 hex digest", field=f"content_hashes[{i}]"
                )
        if not hashes and not document_id:
            raise InvalidArgument(
                "give content_hashes to look up, or a document_id to list that document's hashes",
                field="content_hashes",
            )
        async with self._db.connection() as conn:
            collection_id = await self._collection_id(conn, name)
            if document_id:
                rows = await conn.fetch(
                    "SELECT c.content_hash FROM chunks AS c JOIN documents AS d ON d.id = c.document_id"
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
        return pb.LookupChunkHashesResponse(stored_hashes=found)

    async def GetStoredDocument(
        self, request: pb.GetStoredDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStoredDocumentResponse:
        name = validate_collection_name(request.collection, "collection")
        document_id = _validate_document_id(request.document_id)
        async with self._db.connection() as conn:
            collection_id = await self._collection_id(conn, name)
            row = await conn.fetchrow(
                f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE collection_id = $1 AND document_id = $2",
                collection_id,
                document_id,
            )
        if row is None:
            raise NotFound(
                f"document {document_id!r} does not exist in collection {name!r}", field="document_id"
            )
        return pb.GetStoredDocumentResponse(document=_document_pb(name, row))

    async def ListStoredDocuments(
        self, request: pb.ListStoredDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStoredDocumentsResponse:
        name = validate_collection_name(request.collection, "collection")
        page_size = _page_size(request.page_size)
        scope = f"documents/{name}"
        after = decode_page_token(request.page_token, scope)
        async with self._db.connection() as conn:
            collection_id = await self._collection_id(conn, name)
            rows = await conn.fetch(
                f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE collection_id = $1 AND document_id > $2"
                " ORDER BY document_id LIMIT $3",
                collection_id,
                after,
                page_size + 1,
            )
        next_token = (
            encode_page_token(scope, rows[page_size - 1]["document_id"]) if len(rows) > page_size else ""
        )
        return pb.ListStoredDocumentsResponse(
            documents=[_document_pb(name, row) for row in rows[:page_size]], next_page_token=next_token
        )

    async def DeleteStoredDocument(
        self, request: pb.DeleteStoredDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteStoredDocumentResponse:
        name = validate_collection_name(request.collection, "collection")
        document_id = _validate_document_id(request.document_id)
        async with (
            self._publisher.changing(name) as change,
            self._db.connection() as conn,
            conn.transaction(),
        ):
            collection = await _collection_for_write(conn, name)
            deleted = await conn.fetchval(
                "DELETE FROM documents WHERE collection_id = $1 AND document_id = $2 RETURNING chunk_count",
                collection["id"],
                document_id,
            )
            if deleted is None:
                raise NotFound(
                    f"document {document_id!r} does not exist in collection {name!r}", field="document_id"
                )
            change.made = True
            generation = await _bump_generation(conn, collection["id"])
        return pb.DeleteStoredDocumentResponse(deleted_chunks=deleted, generation=generation)

    @staticmethod
    async def _collection_id(conn: PooledConnection, name: str) -> int:
        collection_id: int | None = await conn.fetchval("SELECT id FROM collections WHERE name = $1", name)
        if collection_id is None:
            raise NotFound(f"collection {name!r} does not exist", field="collection")
        return collection_id

    async def CreateStoredIngestJob(
        self, request: pb.CreateStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStoredIngestJobResponse:
        name = validate_collection_name(request.collection, "collection")
        async with self._db.connection() as conn:
            await self._collection_id(conn, name)
            job = await jobs.create_job(conn, name, request.documents, request.accepting_documents)
        return pb.CreateStoredIngestJobResponse(job=job)

    async def AppendStoredIngestJob(
        self, request: pb.AppendStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendStoredIngestJobResponse:
        job_id = jobs.parse_uuid(request.job_id, "job_id")
        async with self._db.connection() as conn:
            job = await jobs.append_documents(conn, job_id, request.documents, request.last)
        return pb.AppendStoredIngestJobResponse(job=job)

    async def GetStoredIngestJob(
        self, request: pb.GetStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStoredIngestJobResponse:
        job_id = jobs.parse_uuid(request.job_id, "job_id")
        async with self._db.connection() as conn:
            return pb.GetStoredIngestJobResponse(job=await jobs.get_job(conn, job_id))

    async def ListStoredIngestJobs(
        self, request: pb.ListStoredIngestJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStoredIngestJobsResponse:
        if request.collection:
            validate_collection_name(request.collection, "collection")
        page_size = _page_size(request.page_size)
        scope = f"ingest-jobs/{request.collection}"
        after_key = decode_page_token(request.page_token, scope)
        after = None
        if after_key:
            created, _, job_id = after_key.partition(" ")
            try:
                after = (datetime.fromisoformat(created), jobs.parse_uuid(job_id, "page_token"))
            except ValueError:
                raise InvalidArgument(
                    "page_token is not a next_page_token of this listing", field="page_token"
                ) from None
        async with self._db.connection() as conn:
            rows = await jobs.list_jobs(conn, request.collection, after, page_size + 1)
        next_token = ""
        if len(rows) > page_size:
            last = rows[page_size - 1]
            next_token = encode_page_token(scope, f"{last['created_at'].isoformat()} {last['id']}")
        return pb.ListStoredIngestJobsResponse(
            jobs=[jobs.job_pb(row) for row in rows[:page_size]], next_page_token=next_token
        )

    async def CancelStoredIngestJob(
        self, request: pb.CancelStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelStoredIngestJobResponse:
        job_id = jobs.parse_uuid(request.job_id, "job_id")
        async with self._db.connection() as conn:
            return pb.CancelStoredIngestJobResponse(job=await jobs.cancel_job(conn, job_id, request.reason))

    async def ClaimIngestWork(
        self, request: pb.ClaimIngestWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimIngestWorkResponse:
        async with self._db.connection() as conn:
            claimed = await jobs.claim_documents(
                conn, request.max_documents, request.lease_seconds, request.max_attempts
            )
        return pb.ClaimIngestWorkResponse(documents=claimed)

    async def FailIngestWork(
        self, request: pb.FailIngestWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.FailIngestWorkResponse:
        jobs.validate_claim(request.claim)
        retry_after = (
            request.retry_after.ToTimedelta().total_seconds() if request.HasField("retry_after") else None
        )
        if retry_after is not None and retry_after < 0:
            raise InvalidArgument("retry_after must not be negative", field="retry_after")
        async with self._db.connection() as conn:
            requeued = await jobs.fail_document(conn, request.claim, request.reason, retry_after)
        return pb.FailIngestWorkResponse(requeued=requeued)

    async def RenewIngestWork(
        self, request: pb.RenewIngestWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewIngestWorkResponse:
        async with self._db.connection() as conn:
            renewed = await jobs.renew_leases(conn, request.claims, request.lease_seconds)
        return pb.RenewIngestWorkResponse(renewed=renewed)
