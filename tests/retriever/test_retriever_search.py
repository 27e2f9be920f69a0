"""BM25, metadata filters, search options and chunk-hash lookups, over gRPC on the real retriever."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from test_retriever_service import TENANT, axis, chunk, field_violation, struct

from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever.chunks import text_hash

pytestmark = pytest.mark.integration

NewCollection = Callable[..., Awaitable[str]]
VECTOR = common_pb2.SEARCH_MODE_VECTOR
KEYWORD = common_pb2.SEARCH_MODE_KEYWORD
HYBRID = common_pb2.SEARCH_MODE_HYBRID
DOCS = {
    "a": "Supersonic flow over a thin wing. The wing shock is weak.",
    "b": "Heat transfer in laminar boundary layers.",
    "c": "Boundary layer transition on a flat plate in supersonic flow, with heat transfer measured.",
}


UNSET = object()


def condition(field: str, operator: int, value: Any = UNSET) -> common_pb2.MetadataFilter:
    """A one-condition filter; None is JSON null, and leaving `value` out leaves it unset."""
    cond = common_pb2.FieldCondition(field=field, operator=operator)  # type: ignore[arg-type]
    if value is not UNSET:
        cond.value.CopyFrom(struct(v=value).fields["v"])
    return common_pb2.MetadataFilter(condition=cond)


def unset_condition(operator: int) -> common_pb2.MetadataFilter:
    """A one-condition filter whose value is present but has no kind set (what a client's typo sends)."""
    cond = common_pb2.FieldCondition(field="kind", operator=operator, value=struct_pb2.Value())  # type: ignore[arg-type]
    return common_pb2.MetadataFilter(condition=cond)


def bm25(
    query_terms: list[str], docs: dict[str, list[str]], k1: float = 1.5, b: float = 0.75
) -> dict[str, float]:
    """Textbook Okapi BM25 with Lucene's IDF, to check the SQL against."""
    n = len(docs)
    avgdl = sum(map(len, docs.values())) / n
    scores = {}
    for doc, terms in docs.items():
        score = 0.0
        for term in set(query_terms):
            tf = terms.count(term)
            if tf:
                df = sum(1 for t in docs.values() if term in t)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(terms) / avgdl))
        if score:
            scores[doc] = score
    return scores


@pytest.fixture(scope="module")
async def papers(stub: pb_grpc.RetrieverServiceStub) -> str:
    """Three documents with metadata, one chunk each, vectors along axes 0-2."""
    name = "papers"
    await stub.CreateStoredCollection(pb.CreateStoredCollectionRequest(tenant=TENANT, name=name, dimension=8))
    metadata = {
        "a": {"year": 1960, "kind": "paper", "tags": "aero", "author": {"name": "Ames"}},
        "b": {"year": 1955, "kind": "report", "tags": "heat"},
        "c": {"year": 1970, "kind": "paper", "draft": None},
    }
    for i, (doc, text) in enumerate(DOCS.items()):
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id=doc,
                metadata=struct(**metadata[doc]),
                chunks=[chunk(text, axis(i))],
            )
        )
    return name


async def test_keyword_search_is_okapi_bm25(stub: pb_grpc.RetrieverServiceStub, papers: str) -> None:
    # The `ragline_english` configuration's lexemes of the three texts, as PostgreSQL stems them.
    docs = {
        "a": ["superson", "flow", "thin", "wing", "wing", "shock", "weak"],
        "b": ["heat", "transfer", "laminar", "boundari", "layer"],
        "c": [
            "boundari",
            "layer",
            "transit",
            "flat",
            "plate",
            "superson",
            "flow",
            "heat",
            "transfer",
            "measur",
        ],
    }
    for k1, b in ((1.5, 0.75), (0.9, 0.0), (3.0, 1.0)):
        request = pb.SearchChunksRequest(
            tenant=TENANT,
            collection=papers,
            query_text="supersonic wings with heat",
            mode=KEYWORD,
            bm25_k1=k1,
            bm25_b=b,
        )
        reply = await stub.SearchChunks(request)
        expected = bm25(["superson", "wing", "heat"], docs, k1, b)
        assert {h.document_id: h.score for h in reply.hits} == pytest.approx(expected, rel=1e-5)
        assert [h.document_id for h in reply.hits] == sorted(expected, key=lambda d: -expected[d])


async def test_bm25_statistics_follow_writes(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    name = await new_collection()
    for doc in ("x", "y"):
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT, collection=name, document_id=doc, chunks=[chunk(f"common {doc}word", axis(0))]
            )
        )

    async def score() -> float:
        reply = await stub.SearchChunks(
            pb.SearchChunksRequest(tenant=TENANT, collection=name, query_text="xword", mode=KEYWORD)
        )
        return float(reply.hits[0].score)

    before = await score()
    # A third document makes "xword" rarer (higher IDF); deleting it restores the statistics.
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection=name, document_id="z", chunks=[chunk("common zword", axis(1))]
        )
    )
    assert await score() > before
    await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=name, document_id="z")
    )
    assert await score() == pytest.approx(before)
    # Rewriting a chunk's text replaces its postings.
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection=name, document_id="x", chunks=[chunk("common other", axis(0))]
        )
    )
    reply = await stub.SearchChunks(
        pb.SearchChunksRequest(tenant=TENANT, collection=name, query_text="xword", mode=KEYWORD)
    )
    assert list(reply.hits) == []


async def test_hyphenated_compounds_are_indexed_as_their_parts(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    # `ragline_english` (migration 0010) splits "boundary-layer" into boundari + layer only, as
    # textbook BM25 does; `english` also kept the compound "boundary-lay" as a third term.
    name = await new_collection()
    texts = {
        "hyphen": "Boundary-layer suction.",
        "spaced": "Boundary layer suction.",
        "other": "Wing flutter.",
    }
    for i, (doc, text) in enumerate(texts.items()):
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT, collection=name, document_id=doc, chunks=[chunk(text, axis(i))]
            )
        )
    for query in ("boundary layer", "boundary-layer"):
        reply = await stub.SearchChunks(
            pb.SearchChunksRequest(tenant=TENANT, collection=name, query_text=query, mode=KEYWORD)
        )
        # The same terms and the same length: the same score, whichever way either side is written.
        docs = {h.document_id: h.score for h in reply.hits}
        assert set(docs) == {"hyphen", "spaced"}
        assert docs["hyphen"] == pytest.approx(docs["spaced"], rel=1e-6)
        expected = bm25(
            ["boundari", "layer"],
            {d: ["boundari", "layer", "suction"] for d in ("hyphen", "spaced")}
            | {"other": ["wing", "flutter"]},
        )
        assert docs == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("metadata_filter", "expected"),
    [
        (condition("kind", common_pb2.FILTER_OPERATOR_EQ, "paper"), {"a", "c"}),
        (condition("kind", common_pb2.FILTER_OPERATOR_NE, "paper"), {"b"}),
        (condition("tags", common_pb2.FILTER_OPERATOR_NE, "aero"), {"b", "c"}),  # missing counts as different
        (condition("year", common_pb2.FILTER_OPERATOR_IN, [1955, 1970]), {"b", "c"}),
        (condition("tags", common_pb2.FILTER_OPERATOR_NOT_IN, ["aero"]), {"b", "c"}),
        (condition("year", common_pb2.FILTER_OPERATOR_LT, 1960), {"b"}),
        (condition("year", common_pb2.FILTER_OPERATOR_LTE, 1960), {"a", "b"}),
        (condition("year", common_pb2.FILTER_OPERATOR_GT, 1960), {"c"}),
        (condition("year", common_pb2.FILTER_OPERATOR_GTE, 1960.0), {"a", "c"}),
        (condition("kind", common_pb2.FILTER_OPERATOR_GT, "q"), {"b"}),
        (condition("draft", common_pb2.FILTER_OPERATOR_EXISTS), {"c"}),
        (condition("draft", common_pb2.FILTER_OPERATOR_EXISTS, False), {"a", "b"}),
        (condition("draft", common_pb2.FILTER_OPERATOR_EQ, None), {"c"}),
        (condition("author.name", common_pb2.FILTER_OPERATOR_EQ, "Ames"), {"a"}),
        (condition("year", common_pb2.FILTER_OPERATOR_EQ, "1960"), set()),  # a string is not a number
        (
            common_pb2.MetadataFilter(
                any=common_pb2.FilterGroup(
                    filters=[
                        condition("kind", common_pb2.FILTER_OPERATOR_EQ, "report"),
                        common_pb2.MetadataFilter(
                            all=common_pb2.FilterGroup(
                                filters=[
                                    condition("kind", common_pb2.FILTER_OPERATOR_EQ, "paper"),
                                    condition("year", common_pb2.FILTER_OPERATOR_GT, 1965),
                                ]
                            )
                        ),
                    ]
                )
            ),
            {"b", "c"},
        ),
    ],
)
async def test_filters_select_by_metadata_in_every_mode(
    stub: pb_grpc.RetrieverServiceStub,
    papers: str,
    metadata_filter: common_pb2.MetadataFilter,
    expected: set[str],
) -> None:
    for mode in (VECTOR, KEYWORD, HYBRID):
        reply = await stub.SearchChunks(
            pb.SearchChunksRequest(
                tenant=TENANT,
                collection=papers,
                query_text="supersonic heat layer wing",
                query_embedding=[1.0] * 8,
                mode=mode,
                top_k=10,
                filter=metadata_filter,
            )
        )
        assert {h.document_id for h in reply.hits} == expected, mode


@pytest.mark.parametrize(
    ("metadata_filter", "field"),
    [
        (common_pb2.MetadataFilter(), "filter"),
        (common_pb2.MetadataFilter(all=common_pb2.FilterGroup()), "filter.all"),
        (condition("", common_pb2.FILTER_OPERATOR_EQ, 1), "filter.condition.field"),
        (condition("a..b", common_pb2.FILTER_OPERATOR_EQ, 1), "filter.condition.field"),
        (condition("kind", common_pb2.FILTER_OPERATOR_UNSPECIFIED, 1), "filter.condition.operator"),
        (condition("kind", common_pb2.FILTER_OPERATOR_EQ), "filter.condition.value"),
        (condition("kind", common_pb2.FILTER_OPERATOR_IN, "paper"), "filter.condition.value"),
        (condition("kind", common_pb2.FILTER_OPERATOR_IN, []), "filter.condition.value"),
        (condition("year", common_pb2.FILTER_OPERATOR_LT, True), "filter.condition.value"),
        (condition("year", common_pb2.FILTER_OPERATOR_EXISTS, 1), "filter.condition.value"),
        (unset_condition(common_pb2.FILTER_OPERATOR_EQ), "filter.condition.value"),
        (unset_condition(common_pb2.FILTER_OPERATOR_NE), "filter.condition.value"),
        (condition("year", common_pb2.FILTER_OPERATOR_EQ, float("nan")), "filter.condition.value"),
        (condition("year", common_pb2.FILTER_OPERATOR_IN, [1, float("inf")]), "filter.condition.value[1]"),
        (condition("kind", common_pb2.FILTER_OPERATOR_EQ, "paper\x00"), "filter.condition.value"),
        (condition("kind\x00", common_pb2.FILTER_OPERATOR_EQ, "paper"), "filter.condition.field"),
        (condition("kind", 77, "paper"), "filter.condition.operator"),
        (
            common_pb2.MetadataFilter(any=common_pb2.FilterGroup(filters=[common_pb2.MetadataFilter()])),
            "filter.any.filters[0]",
        ),
    ],
)
async def test_malformed_filters_are_invalid(
    stub: pb_grpc.RetrieverServiceStub, papers: str, metadata_filter: common_pb2.MetadataFilter, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SearchChunks(
            pb.SearchChunksRequest(
                tenant=TENANT, collection=papers, query_text="wing", mode=KEYWORD, filter=metadata_filter
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == field


async def test_filter_values_are_never_sql(stub: pb_grpc.RetrieverServiceStub, papers: str) -> None:
    hostile = "paper'); DROP TABLE chunks; --"
    reply = await stub.SearchChunks(
        pb.SearchChunksRequest(
            tenant=TENANT,
            collection=papers,
            query_text="wing",
            mode=KEYWORD,
            filter=condition("kind' OR 1=1 --", common_pb2.FILTER_OPERATOR_NE, hostile),
        )
    )
    assert {h.document_id for h in reply.hits} == {"a"}


async def test_filtered_vector_search_returns_full_k(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    # 2% of 1,500 chunks match, far fewer than ef_search finds: the iterative scan must keep going.
    name = await new_collection(dimension=16)
    rng = random.Random(3)
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT,
            collection=name,
            document_id="many",
            chunks=[
                chunk(f"chunk {i}", [rng.gauss(0, 1) for _ in range(16)], rare=i % 50 == 0)
                for i in range(1500)
            ],
        )
    )
    reply = await stub.SearchChunks(
        pb.SearchChunksRequest(
            tenant=TENANT,
            collection=name,
            query_embedding=[rng.gauss(0, 1) for _ in range(16)],
            mode=VECTOR,
            top_k=20,
            ef_search=10,
            filter=condition("rare", common_pb2.FILTER_OPERATOR_EQ, True),
        )
    )
    assert len(reply.hits) == 20
    assert all(h.metadata["rare"] for h in reply.hits)
    assert [h.score for h in reply.hits] == sorted((h.score for h in reply.hits), reverse=True)


async def test_fusion_weights_and_k(stub: pb_grpc.RetrieverServiceStub, papers: str) -> None:
    base: dict[str, Any] = {
        "collection": papers,
        "query_text": "heat transfer",
        "query_embedding": axis(0),
        "mode": HYBRID,
    }
    reply = await stub.SearchChunks(
        pb.SearchChunksRequest(tenant=TENANT, **base, rrf_k=1, keyword_weight=0.0)
    )
    assert reply.hits[0].document_id == "a"  # the vector's first, the keyword list weighing nothing
    assert reply.hits[0].score == pytest.approx(1 / 2)
    reply = await stub.SearchChunks(
        pb.SearchChunksRequest(tenant=TENANT, **base, rrf_k=10, vector_weight=0.0)
    )
    assert reply.hits[0].document_id in {"b", "c"}
    assert set(reply.hits[0].matched_modes) == {VECTOR, KEYWORD}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ef_search": 1001}, "ef_search"),
        ({"ef_search": -1}, "ef_search"),
        ({"rrf_k": 1001}, "rrf_k"),
        ({"bm25_k1": -0.5}, "bm25_k1"),
        ({"bm25_b": 1.5}, "bm25_b"),
        ({"bm25_b": float("nan")}, "bm25_b"),
        ({"vector_weight": -1.0}, "vector_weight"),
        ({"keyword_weight": 101.0}, "keyword_weight"),
    ],
)
async def test_search_options_are_bounded(
    stub: pb_grpc.RetrieverServiceStub, papers: str, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SearchChunks(
            pb.SearchChunksRequest(
                tenant=TENANT, collection=papers, query_text="wing", query_embedding=axis(0), **options
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == field


async def test_chunk_hash_lookup_and_embedding_reuse(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    name = await new_collection()
    texts = ["first chunk", "second chunk"]
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT,
            collection=name,
            document_id="d",
            chunks=[chunk(t, axis(i)) for i, t in enumerate(texts)],
        )
    )
    known, unknown = text_hash(texts[1]), text_hash("never stored")
    reply = await stub.LookupChunkHashes(
        pb.LookupChunkHashesRequest(tenant=TENANT, collection=name, content_hashes=[unknown, known, known])
    )
    assert list(reply.stored_hashes) == [known]
    reply = await stub.LookupChunkHashes(
        pb.LookupChunkHashesRequest(tenant=TENANT, collection=name, document_id="d")
    )
    assert list(reply.stored_hashes) == [text_hash(t) for t in texts]
    reply = await stub.LookupChunkHashes(
        pb.LookupChunkHashesRequest(
            tenant=TENANT, collection=name, document_id="other", content_hashes=[known]
        )
    )
    assert list(reply.stored_hashes) == []
    # A second document repeating known text sends no embedding for it: the stored one is reused.
    upsert = await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT,
            collection=name,
            document_id="e",
            chunks=[common_pb2.ChunkInput(text=texts[1]), chunk("new text", axis(5))],
        )
    )
    assert upsert.inserted_chunks == 2
    reply = await stub.SearchChunks(
        pb.SearchChunksRequest(tenant=TENANT, collection=name, query_embedding=axis(1), mode=VECTOR, top_k=2)
    )
    assert {h.document_id for h in reply.hits} == {"d", "e"}
    assert all(h.score == pytest.approx(1.0) for h in reply.hits)
    # Text the collection has never seen needs its embedding; nothing is written without it.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id="f",
                chunks=[chunk("ok", axis(0)), common_pb2.ChunkInput(text="unseen")],
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == "chunks[1].embedding"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetStoredDocument(
            pb.GetStoredDocumentRequest(tenant=TENANT, collection=name, document_id="f")
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"content_hashes": ["nothex"]}, grpc.StatusCode.INVALID_ARGUMENT, "content_hashes[0]"),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "content_hashes"),
        ({"collection": "missing", "content_hashes": ["0" * 64]}, grpc.StatusCode.NOT_FOUND, "collection"),
    ],
)
async def test_chunk_hash_lookup_validates(
    stub: pb_grpc.RetrieverServiceStub,
    papers: str,
    request_fields: dict[str, Any],
    code: grpc.StatusCode,
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.LookupChunkHashes(
            pb.LookupChunkHashesRequest(tenant=TENANT, **{"collection": papers, **request_fields})
        )
    assert raised.value.code() == code
    assert field_violation(raised.value) == field
