"""`hybrid_search_sql` (one statement for a whole hybrid search) finds exactly what SearchChunks finds
with its two candidate queries and `fuse`: same chunks, order, scores, modes and generation, with and
without a metadata filter, for any weights and RRF k.

Runs on the session's real retriever: SearchChunks over gRPC, the statement straight on its database.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import numpy as np
import pytest
from test_retriever_search import condition
from test_retriever_service import chunk, struct

from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever.database import _init_connection
from ragline_retriever.filters import Params, compile_filter
from ragline_retriever.search import (
    HYBRID_FILTER_PARAMS,
    METADATA_SQL,
    MIN_CANDIDATES,
    fused_hit_from_row,
    hybrid_search_sql,
)

pytestmark = pytest.mark.integration

WORDS = [
    "supersonic",
    "subsonic",
    "flow",
    "wing",
    "shock",
    "boundary",
    "layer",
    "heat",
    "transfer",
    "plate",
    "cylinder",
    "pressure",
    "laminar",
    "turbulent",
    "nozzle",
    "jet",
    "wake",
    "vortex",
    "panel",
    "flutter",
    "buckling",
    "shell",
]
DIMENSION = 8


@pytest.fixture(scope="module")
async def library(stub: pb_grpc.RetrieverServiceStub) -> str:
    """60 documents of 1-3 chunks of random words, random vectors, and a `group` 0-2 in their metadata."""
    rng = random.Random(6)
    name = "hybrid-sql"
    await stub.CreateCollection(pb.CreateCollectionRequest(name=name, dimension=DIMENSION))
    for i in range(60):
        chunks = [
            chunk(
                " ".join(rng.choices(WORDS, k=rng.randint(4, 12))),
                [rng.gauss(0, 1) for _ in range(DIMENSION)],
            )
            for _ in range(rng.randint(1, 3))
        ]
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                collection=name, document_id=f"doc-{i}", metadata=struct(group=i % 3), chunks=chunks
            )
        )
    return name


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await _init_connection(connection)
    try:
        yield connection
    finally:
        await connection.close()


async def _one_statement(
    conn: asyncpg.Connection,
    name: str,
    request: pb.SearchChunksRequest,
    collection_id: int | None = None,
) -> tuple[list[tuple[Any, ...]], int | None]:
    """What the statement finds for `request`, set up as SearchChunks sets up its queries."""
    row = await conn.fetchrow("SELECT id, dimension FROM collections WHERE name = $1", name)
    assert row is not None
    candidates = max(request.top_k, MIN_CANDIDATES)
    params, sql_condition = Params(HYBRID_FILTER_PARAMS), None
    if request.HasField("filter"):
        sql_condition = compile_filter(request.filter, METADATA_SQL, params)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", str(max(candidates, 40)))
        if request.HasField("filter"):
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        rows = await conn.fetch(
            hybrid_search_sql(collection_id or row["id"], row["dimension"], sql_condition),
            request.query_text,
            name,
            candidates,
            request.bm25_k1 if request.HasField("bm25_k1") else 1.5,
            request.bm25_b if request.HasField("bm25_b") else 0.75,
            np.asarray(request.query_embedding, dtype=np.float32),
            float(request.rrf_k or 60),
            request.top_k,
            request.vector_weight if request.HasField("vector_weight") else 1.0,
            request.keyword_weight if request.HasField("keyword_weight") else 1.0,
            *params.values,
        )
    hits = [hit for hit in map(fused_hit_from_row, rows) if hit is not None]
    # SearchHit.score is a 32-bit float.
    found = [
        (str(h.chunk_id), h.document_id, h.ordinal, h.text, float(np.float32(h.score)), list(h.modes))
        for h in hits
    ]
    return found, rows[0]["generation"] if rows else None


def _found(reply: pb.SearchChunksResponse) -> list[tuple[Any, ...]]:
    return [
        (h.chunk_id, h.document_id, h.ordinal, h.text, float(np.float32(h.score)), list(h.matched_modes))
        for h in reply.hits
    ]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"top_k": 5},
        {"top_k": 60},
        {"rrf_k": 1},
        {"vector_weight": 0.0},
        {"keyword_weight": 2.5, "rrf_k": 10},
        {"bm25_k1": 0.9, "bm25_b": 0.4},
        {"filter": condition("group", common_pb2.FILTER_OPERATOR_EQ, 1)},
        {"filter": condition("group", common_pb2.FILTER_OPERATOR_IN, [0, 2]), "top_k": 30},
    ],
)
async def test_one_statement_finds_what_search_chunks_finds(
    stub: pb_grpc.RetrieverServiceStub, conn: asyncpg.Connection, library: str, options: dict[str, Any]
) -> None:
    rng = random.Random(str(options))
    for _ in range(8):
        request = pb.SearchChunksRequest(
            collection=library,
            query_text=" ".join(rng.choices(WORDS, k=rng.randint(1, 5))),
            query_embedding=[rng.gauss(0, 1) for _ in range(DIMENSION)],
            mode=common_pb2.SEARCH_MODE_HYBRID,
            top_k=options.get("top_k", 10),
            **{k: v for k, v in options.items() if k != "top_k"},
        )
        reply = await stub.SearchChunks(request)
        found, generation = await _one_statement(conn, library, request)
        assert found == _found(reply)
        assert generation == reply.generation
        assert found, "every query should find something here"


async def test_one_statement_knows_a_stale_collection_id_and_an_empty_result(
    conn: asyncpg.Connection, library: str, new_collection: Callable[..., Awaitable[str]]
) -> None:
    empty = await new_collection(DIMENSION, "hybrid-sql-empty")
    request = pb.SearchChunksRequest(
        query_text="flow", query_embedding=[1.0] * DIMENSION, top_k=10, mode=common_pb2.SEARCH_MODE_HYBRID
    )
    found, generation = await _one_statement(conn, empty, request)
    assert (found, generation) == ([], 0)
    # The id of another collection under this name: no row at all, so the caller looks the name up again.
    other = await conn.fetchval("SELECT id FROM collections WHERE name = $1", library)
    found, generation = await _one_statement(conn, empty, request, collection_id=other)
    assert (found, generation) == ([], None)
