"""Hybrid SearchChunks, one SQL statement, finds exactly what its vector and keyword searches find
when fused in Python: same chunks, order, scores, modes and generation, with and without a metadata
filter, for any weights, RRF k and ef_search; and a search of each mode, which remembers the
collection's id, follows a collection deleted and created again.

Runs on the session's real retriever, over gRPC.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import pytest
from rank_fusion import fuse
from test_retriever_search import condition
from test_retriever_service import TENANT, chunk, struct

from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever.search import MIN_CANDIDATES, Hit

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
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=TENANT, name=name, dimension=DIMENSION)
    )
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
                tenant=TENANT,
                collection=name,
                document_id=f"doc-{i}",
                metadata=struct(group=i % 3),
                chunks=chunks,
            )
        )
    return name


def _hits(reply: pb.SearchChunksResponse) -> list[Hit]:
    return [
        Hit(int(h.chunk_id), h.document_id, h.ordinal, h.text, {}, h.score, list(h.matched_modes))
        for h in reply.hits
    ]


def _found(hits: list[Hit]) -> list[tuple[Any, ...]]:
    # SearchHit.score is a 32-bit float.
    return [(h.chunk_id, h.document_id, h.ordinal, h.text, float(np.float32(h.score)), h.modes) for h in hits]


async def _fused_in_python(
    stub: pb_grpc.RetrieverServiceStub, request: pb.SearchChunksRequest
) -> tuple[list[Hit], int]:
    """What hybrid search should find: a vector and a keyword search as deep as its candidate lists, fused."""
    lists, generations = [], set()
    for mode, weight in (
        (common_pb2.SEARCH_MODE_VECTOR, "vector_weight"),
        (common_pb2.SEARCH_MODE_KEYWORD, "keyword_weight"),
    ):
        single = pb.SearchChunksRequest(tenant=TENANT)
        single.CopyFrom(request)
        single.mode = mode
        single.top_k = max(request.top_k, MIN_CANDIDATES)
        for field in ("rrf_k", "vector_weight", "keyword_weight"):
            single.ClearField(field)
        reply = await stub.SearchChunks(single)
        lists.append((_hits(reply), getattr(request, weight) if request.HasField(weight) else 1.0))
        generations.add(reply.generation)
    (generation,) = generations
    return fuse(lists, request.top_k, request.rrf_k or 60), generation


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
        {"ef_search": 100},
        {"filter": condition("group", common_pb2.FILTER_OPERATOR_EQ, 1)},
        {"filter": condition("group", common_pb2.FILTER_OPERATOR_IN, [0, 2]), "top_k": 30},
    ],
)
async def test_hybrid_search_finds_what_both_searches_find_fused(
    stub: pb_grpc.RetrieverServiceStub, library: str, options: dict[str, Any]
) -> None:
    rng = random.Random(str(options))
    for _ in range(8):
        request = pb.SearchChunksRequest(
            tenant=TENANT,
            collection=library,
            query_text=" ".join(rng.choices(WORDS, k=rng.randint(1, 5))),
            query_embedding=[rng.gauss(0, 1) for _ in range(DIMENSION)],
            mode=common_pb2.SEARCH_MODE_HYBRID,
            top_k=options.get("top_k", 10),
            **{k: v for k, v in options.items() if k != "top_k"},
        )
        reply = await stub.SearchChunks(request)
        expected, generation = await _fused_in_python(stub, request)
        assert _found(_hits(reply)) == _found(expected)
        assert reply.generation == generation
        assert reply.hits, "every query should find something here"


@pytest.mark.parametrize(
    "mode", [common_pb2.SEARCH_MODE_HYBRID, common_pb2.SEARCH_MODE_VECTOR, common_pb2.SEARCH_MODE_KEYWORD]
)
async def test_search_follows_a_collection_deleted_and_created_again(
    stub: pb_grpc.RetrieverServiceStub, new_collection: Callable[..., Awaitable[str]], mode: int
) -> None:
    name = await new_collection(DIMENSION, f"again-{mode}")
    request = pb.SearchChunksRequest(
        tenant=TENANT,
        collection=name,
        query_text="flow",
        query_embedding=[1.0] * DIMENSION,
        top_k=10,
        mode=mode,
    )
    reply = await stub.SearchChunks(request)  # an empty collection: no hit, generation 0
    assert (list(reply.hits), reply.generation) == ([], 0)
    for dimension in (DIMENSION, DIMENSION * 2):
        # The name now belongs to another collection, which the remembered id no longer names.
        await stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=TENANT, name=name))
        await stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(tenant=TENANT, name=name, dimension=dimension)
        )
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id="only",
                chunks=[chunk("supersonic flow", [1.0] * dimension)],
            )
        )
        request.query_embedding[:] = [1.0] * dimension
        reply = await stub.SearchChunks(request)
        assert [h.document_id for h in reply.hits] == ["only"]
        assert reply.generation == 1
    wrong_dimension = pb.SearchChunksRequest(
        tenant=TENANT, collection=name, query_text="flow", query_embedding=[1.0] * DIMENSION, mode=mode
    )
    if mode == common_pb2.SEARCH_MODE_KEYWORD:
        # A keyword search reads no embedding.
        assert [h.document_id for h in (await stub.SearchChunks(wrong_dimension)).hits] == ["only"]
    else:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SearchChunks(wrong_dimension)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "query_embedding" in (raised.value.details() or "")
    await stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=TENANT, name=name))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SearchChunks(request)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
