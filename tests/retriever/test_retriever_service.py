"""The retriever's RPCs, called over gRPC on a real retriever process with its embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from ragline.devstack import ServiceProcess
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

# The tenant the tests' calls are confined to; tests of confinement bring others.
TENANT = "tests"

NewCollection = Callable[..., Awaitable[str]]

VECTOR = common_pb2.SEARCH_MODE_VECTOR
KEYWORD = common_pb2.SEARCH_MODE_KEYWORD
HYBRID = common_pb2.SEARCH_MODE_HYBRID


def axis(i: int, dimension: int = 8) -> list[float]:
    """A unit vector along axis `i`: handmade embeddings whose nearest neighbours are obvious."""
    return [1.0 if j == i else 0.0 for j in range(dimension)]


def struct(**values: Any) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


def chunk(text: str, embedding: Sequence[float], **metadata: object) -> common_pb2.ChunkInput:
    return common_pb2.ChunkInput(
        text=text, embedding=embedding, token_count=len(text.split()), metadata=struct(**metadata)
    )


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def field_violation(error: grpc.aio.AioRpcError) -> str:
    """The field named by the BadRequest detail of an error."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    return str(bad_request.field_violations[0].field)
    raise AssertionError(f"no BadRequest detail in {error!r}")


async def test_collection_lifecycle(stub: pb_grpc.RetrieverServiceStub) -> None:
    created = await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(
            tenant=TENANT, name="life.cycle", embedding_model="mini", dimension=8
        )
    )
    assert created.collection.name == "life.cycle"
    assert created.collection.dimension == 8
    assert created.collection.distance == common_pb2.DISTANCE_METRIC_COSINE
    assert created.collection.generation == 0
    assert created.collection.create_time.seconds > 0

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(tenant=TENANT, name="life.cycle", dimension=8)
        )
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS

    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection="life.cycle", document_id="a", chunks=[chunk("one", axis(0))]
        )
    )
    got = await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name="life.cycle"))
    assert (got.collection.embedding_model, got.collection.document_count, got.collection.chunk_count) == (
        "mini",
        1,
        1,
    )
    assert got.collection.generation == 1

    deleted = await stub.DeleteStoredCollection(
        pb.DeleteStoredCollectionRequest(tenant=TENANT, name="life.cycle")
    )
    assert deleted.deleted_documents == 1
    for call in (
        stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name="life.cycle")),
        stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=TENANT, name="life.cycle")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # The name is free again, and the new collection starts empty.
    again = await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=TENANT, name="life.cycle", dimension=3)
    )
    assert (again.collection.dimension, again.collection.document_count) == (3, 0)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CreateStoredCollectionRequest(tenant=TENANT, name="bad name", dimension=8), "name"),
        (pb.CreateStoredCollectionRequest(tenant=TENANT, name="x" * 64, dimension=8), "name"),
        (pb.CreateStoredCollectionRequest(tenant=TENANT, name="zero", dimension=0), "dimension"),
        (pb.CreateStoredCollectionRequest(tenant=TENANT, name="huge", dimension=4001), "dimension"),
    ],
)
async def test_create_collection_validates(
    stub: pb_grpc.RetrieverServiceStub, request_: pb.CreateStoredCollectionRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateStoredCollection(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == field


async def test_list_collections_pages_through_all(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    mine = {await new_collection(prefix="page") for _ in range(5)}
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListStoredCollections(
            pb.ListStoredCollectionsRequest(tenant=TENANT, page_size=2, page_token=token)
        )
        assert len(page.collections) <= 2
        names.extend(c.name for c in page.collections)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages >= 3
    assert mine <= set(names)
    assert names == sorted(names) and len(names) == len(set(names))

    for bad in ("garbage!", "AAAA"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListStoredCollections(pb.ListStoredCollectionsRequest(tenant=TENANT, page_token=bad))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violation(raised.value) == "page_token"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListStoredCollections(pb.ListStoredCollectionsRequest(tenant=TENANT, page_size=1001))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_upsert_keeps_unchanged_chunks_and_counts_changes(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    name = await new_collection()
    chunks = [chunk("alpha text", axis(0)), chunk("beta text", axis(1)), chunk("gamma text", axis(2))]

    def upsert(
        chunk_list: list[common_pb2.ChunkInput], **metadata: object
    ) -> Awaitable[pb.UpsertDocumentResponse]:
        return stub.UpsertDocument(  # type: ignore[no-any-return]
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id="doc",
                chunks=chunk_list,
                metadata=struct(**metadata),
            )
        )

    first = await upsert(chunks, source="a.txt")
    assert (first.inserted_chunks, first.unchanged_chunks, first.updated_chunks, first.deleted_chunks) == (
        3,
        0,
        0,
        0,
    )
    assert first.document.chunk_count == 3
    assert first.generation == 1

    again = await upsert(chunks, source="a.txt")
    assert (again.inserted_chunks, again.unchanged_chunks, again.updated_chunks, again.deleted_chunks) == (
        0,
        3,
        0,
        0,
    )
    assert again.generation == first.generation
    assert again.document.update_time == first.document.update_time

    changed = await upsert([chunks[0], chunk("beta rewritten", axis(1)), chunks[2]], source="a.txt")
    assert (changed.unchanged_chunks, changed.updated_chunks, changed.inserted_chunks) == (2, 1, 0)
    assert changed.generation == first.generation + 1

    shorter = await upsert([chunks[0]], source="a.txt")
    assert (shorter.unchanged_chunks, shorter.deleted_chunks) == (1, 2)
    assert shorter.document.chunk_count == 1
    assert shorter.generation == first.generation + 2

    retagged = await upsert([chunks[0]], source="b.txt")
    assert retagged.unchanged_chunks == 1
    assert retagged.generation == first.generation + 3
    stored = await stub.GetStoredDocument(
        pb.GetStoredDocumentRequest(tenant=TENANT, collection=name, document_id="doc")
    )
    assert dict(stored.document.metadata) == {"source": "b.txt"}
    assert stored.document.chunk_count == 1
    collection = await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=name))
    assert (collection.collection.chunk_count, collection.collection.generation) == (1, retagged.generation)
    assert collection.collection.document_count == 1
    # The basic view, the query pipeline's lookup, is the same collection without its counts.
    basic = await stub.GetStoredCollection(
        pb.GetStoredCollectionRequest(tenant=TENANT, name=name, view=pb.COLLECTION_VIEW_BASIC)
    )
    expected = pb.GetStoredCollectionResponse()
    expected.CopyFrom(collection)
    expected.collection.ClearField("document_count")
    expected.collection.ClearField("chunk_count")
    assert basic == expected
    full = await stub.GetStoredCollection(
        pb.GetStoredCollectionRequest(tenant=TENANT, name=name, view=pb.COLLECTION_VIEW_FULL)
    )
    assert full == collection
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=name, view=7))  # type: ignore[arg-type]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == "view"


async def test_upsert_with_a_wrong_dimension_writes_nothing(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    name = await new_collection()
    good = await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection=name, document_id="kept", chunks=[chunk("original", axis(0))]
        )
    )
    for document_id in ("kept", "new"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.UpsertDocument(
                pb.UpsertDocumentRequest(
                    tenant=TENANT,
                    collection=name,
                    document_id=document_id,
                    chunks=[chunk("fine", axis(0)), chunk("short", [1.0] * 7)],
                )
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violation(raised.value) == "chunks[1].embedding"
        assert "dimension 8" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetStoredDocument(
            pb.GetStoredDocumentRequest(tenant=TENANT, collection=name, document_id="new")
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    kept = await stub.SearchChunks(
        pb.SearchChunksRequest(tenant=TENANT, collection=name, query_embedding=axis(0), mode=VECTOR)
    )
    assert [h.text for h in kept.hits] == ["original"]
    assert kept.generation == good.generation


def unset_value(key: str, listed: bool = False) -> struct_pb2.Struct:
    """Metadata whose value under `key` (or, `listed`, the second of a list there) has no kind set,
    as a client's mistake sends it."""
    unset = struct_pb2.Value()
    if listed:
        unset = struct_pb2.Value(
            list_value=struct_pb2.ListValue(values=[struct_pb2.Value(number_value=0), unset])
        )
    return struct_pb2.Struct(fields={key: unset})


def upsert_request(**fields: Any) -> pb.UpsertDocumentRequest:
    """An upsert of one valid chunk into the test's collection, with `fields` overridden."""
    values: dict[str, Any] = {"collection": "{name}", "document_id": "d", "chunks": [chunk("t", axis(0))]}
    return pb.UpsertDocumentRequest(tenant=TENANT, **{**values, **fields})


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (upsert_request(collection=""), "INVALID_ARGUMENT", "collection"),
        (upsert_request(collection="nope"), "NOT_FOUND", "collection"),
        (upsert_request(document_id=""), "INVALID_ARGUMENT", "document_id"),
        (upsert_request(chunks=[]), "INVALID_ARGUMENT", "chunks"),
        (upsert_request(chunks=[chunk("", axis(0))]), "INVALID_ARGUMENT", "chunks[0].text"),
        (upsert_request(chunks=[chunk("t", [0.0] * 8)]), "INVALID_ARGUMENT", "chunks[0].embedding"),
        (upsert_request(chunks=[chunk("t", [float("nan")] * 8)]), "INVALID_ARGUMENT", "chunks[0].embedding"),
        (upsert_request(content_hash="xyz"), "INVALID_ARGUMENT", "content_hash"),
        (upsert_request(document_id="a\x00b"), "INVALID_ARGUMENT", "document_id"),
        (upsert_request(metadata=unset_value("k")), "INVALID_ARGUMENT", "metadata.k"),
        (upsert_request(metadata=unset_value("k", listed=True)), "INVALID_ARGUMENT", "metadata.k[1]"),
        (upsert_request(metadata=struct(note="a\x00")), "INVALID_ARGUMENT", "metadata.note"),
        (
            upsert_request(chunks=[chunk("t", axis(0), score=float("nan"))]),
            "INVALID_ARGUMENT",
            "chunks[0].metadata.score",
        ),
        (
            upsert_request(chunks=[chunk("t", axis(0), score=float("inf"))]),
            "INVALID_ARGUMENT",
            "chunks[0].metadata.score",
        ),
    ],
)
async def test_upsert_validates(
    stub: pb_grpc.RetrieverServiceStub,
    new_collection: NewCollection,
    request_: pb.UpsertDocumentRequest,
    code: str,
    field: str,
) -> None:
    if request_.collection == "{name}":
        request_.collection = await new_collection()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpsertDocument(request_)
    assert raised.value.code().name == code
    assert field_violation(raised.value) == field


@pytest.fixture(scope="module")
async def corpus(stub: pb_grpc.RetrieverServiceStub) -> str:
    """A collection of four one-chunk documents on unrelated topics, each along its own axis."""
    name = "search-corpus"
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=TENANT, name=name, embedding_model="handmade", dimension=8)
    )
    texts = {
        "volcano": "Volcanoes erupt molten lava and ash when magma rises through the crust.",
        "bread": "Bakers knead dough and let the yeast rise before baking bread.",
        "chess": "A chess opening controls the centre of the board with pawns and knights.",
        "tides": "The moon's gravity pulls the oceans and causes the tides.",
    }
    for i, (document_id, text) in enumerate(texts.items()):
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id=document_id,
                metadata=struct(topic=document_id, lang="en"),
                chunks=[chunk(text, axis(i), lang="la" if document_id == "volcano" else "en")],
            )
        )
    return name


async def search(
    stub: pb_grpc.RetrieverServiceStub,
    collection: str,
    mode: int,
    text: str = "",
    embedding: Sequence[float] = (),
) -> pb.SearchChunksResponse:
    return await stub.SearchChunks(  # type: ignore[no-any-return]
        pb.SearchChunksRequest(
            tenant=TENANT,
            collection=collection,
            query_text=text,
            query_embedding=embedding,
            mode=cast(common_pb2.SearchMode, mode),
            top_k=3,
        )
    )


async def test_vector_search_finds_the_nearest_chunk(stub: pb_grpc.RetrieverServiceStub, corpus: str) -> None:
    near_chess = [0.1, 0.0, 0.95, 0.05, 0.0, 0.0, 0.0, 0.0]
    reply = await search(stub, corpus, VECTOR, embedding=near_chess)
    assert [h.document_id for h in reply.hits] == ["chess", "volcano", "tides"]
    assert reply.hits[0].score == pytest.approx(0.99, abs=0.01)
    assert reply.hits[0].score > reply.hits[1].score > reply.hits[2].score
    assert list(reply.hits[0].matched_modes) == [VECTOR]
    assert int(reply.hits[0].chunk_id) > 0
    assert reply.generation == 4


async def test_keyword_search_ranks_by_terms(stub: pb_grpc.RetrieverServiceStub, corpus: str) -> None:
    reply = await search(stub, corpus, KEYWORD, text="Which ocean tides does the Moon cause?")
    assert reply.hits[0].document_id == "tides"
    assert list(reply.hits[0].matched_modes) == [KEYWORD]
    # Stemming: "erupting volcanoes" matches "Volcanoes erupt"; OR semantics: one term is enough.
    reply = await search(stub, corpus, KEYWORD, text="erupting volcanoes xylophone")
    assert [h.document_id for h in reply.hits] == ["volcano"]
    # Query text is data, never tsquery syntax.
    reply = await search(stub, corpus, KEYWORD, text="bread' | !(x) & 'y':* \\ <-> ''")
    assert [h.document_id for h in reply.hits] == ["bread"]
    reply = await search(stub, corpus, KEYWORD, text="the of and")
    assert list(reply.hits) == []


async def test_hybrid_search_fuses_both_lists(stub: pb_grpc.RetrieverServiceStub, corpus: str) -> None:
    # The vector ranks "bread" first; the words rank "tides" (two terms) first and "bread" (one) second.
    # Fused, "bread" scores 1/61 + 1/62 and beats "tides", last among the vector candidates.
    reply = await search(stub, corpus, HYBRID, text="moon tides bread", embedding=axis(1))
    assert [h.document_id for h in reply.hits[:2]] == ["bread", "tides"]
    assert reply.hits[0].score == pytest.approx(1 / 61 + 1 / 62, rel=1e-4)
    assert set(reply.hits[0].matched_modes) == {VECTOR, KEYWORD}
    # The default mode is hybrid.
    default = await search(
        stub, corpus, common_pb2.SEARCH_MODE_UNSPECIFIED, text="moon tides bread", embedding=axis(1)
    )
    assert [h.chunk_id for h in default.hits] == [h.chunk_id for h in reply.hits]


async def test_hits_carry_merged_metadata(stub: pb_grpc.RetrieverServiceStub, corpus: str) -> None:
    reply = await search(stub, corpus, VECTOR, embedding=axis(0))
    volcano = reply.hits[0]
    assert volcano.document_id == "volcano"
    # The chunk's "lang" overrides the document's.
    assert dict(volcano.metadata) == {"topic": "volcano", "lang": "la"}
    assert volcano.ordinal == 0
    assert volcano.text.startswith("Volcanoes erupt")


@pytest.mark.parametrize(
    ("mode", "text", "embedding", "field"),
    [
        (VECTOR, "", [1.0] * 7, "query_embedding"),
        (VECTOR, "words", [], "query_embedding"),
        (KEYWORD, "   ", [], "query_text"),
        (HYBRID, "", axis(0), "query_text"),
        (HYBRID, "words", [], "query_embedding"),
        (7, "words", axis(0), "mode"),
        (KEYWORD, "words\x00", [], "query_text"),
        # ~150k distinct words once made PostgreSQL's tsvector overflow: INTERNAL, not a client error.
        (KEYWORD, " ".join(f"w{i}" for i in range(150_000)), [], "query_text"),
    ],
)
async def test_search_validates(
    stub: pb_grpc.RetrieverServiceStub, corpus: str, mode: int, text: str, embedding: list[float], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await search(stub, corpus, mode, text=text, embedding=embedding)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == field


async def test_search_of_an_unknown_collection_is_not_found(stub: pb_grpc.RetrieverServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await search(stub, "missing", VECTOR, embedding=axis(0))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_collections_of_different_dimensions_coexist(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    small, large = await new_collection(dimension=3), await new_collection(dimension=5)
    for name, dimension in ((small, 3), (large, 5)):
        for i in range(dimension):
            await stub.UpsertDocument(
                pb.UpsertDocumentRequest(
                    tenant=TENANT,
                    collection=name,
                    document_id=f"d{i}",
                    chunks=[chunk(f"text {i}", axis(i, dimension))],
                )
            )
    for name, dimension in ((small, 3), (large, 5)):
        reply = await search(stub, name, VECTOR, embedding=axis(dimension - 1, dimension))
        assert reply.hits[0].document_id == f"d{dimension - 1}"
        assert len(reply.hits) == 3


async def test_list_and_delete_documents(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    name = await new_collection()
    ids = [f"doc-{i:02d}" for i in range(7)]
    for i, document_id in enumerate(reversed(ids)):
        reply = await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id=document_id,
                chunks=[chunk(f"chunk {j} of {document_id}", axis((i + j) % 8)) for j in range(2)],
            )
        )
    generation = reply.generation

    listed: list[str] = []
    token = ""
    while True:
        page = await stub.ListStoredDocuments(
            pb.ListStoredDocumentsRequest(tenant=TENANT, collection=name, page_size=3, page_token=token)
        )
        listed.extend(d.document_id for d in page.documents)
        assert all(d.chunk_count == 2 and d.collection == name for d in page.documents)
        token = page.next_page_token
        if not token:
            break
    assert listed == ids

    # A token of one collection's listing is not accepted for another's.
    first = await stub.ListStoredDocuments(
        pb.ListStoredDocumentsRequest(tenant=TENANT, collection=name, page_size=1)
    )
    other = await new_collection()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListStoredDocuments(
            pb.ListStoredDocumentsRequest(tenant=TENANT, collection=other, page_token=first.next_page_token)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    deleted = await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=name, document_id="doc-03")
    )
    assert (deleted.deleted_chunks, deleted.generation) == (2, generation + 1)
    for call in (
        stub.GetStoredDocument(
            pb.GetStoredDocumentRequest(tenant=TENANT, collection=name, document_id="doc-03")
        ),
        stub.DeleteStoredDocument(
            pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=name, document_id="doc-03")
        ),
        stub.ListStoredDocuments(pb.ListStoredDocumentsRequest(tenant=TENANT, collection="missing")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    collection = await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=name))
    assert (collection.collection.document_count, collection.collection.chunk_count) == (6, 12)
    hits = await search(stub, name, KEYWORD, text="doc-03 chunk")
    assert all(h.document_id != "doc-03" for h in hits.hits)


async def test_search_latency_is_exported(
    retriever: ServiceProcess, stub: pb_grpc.RetrieverServiceStub, corpus: str
) -> None:
    await search(stub, corpus, KEYWORD, text="bread")
    metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{retriever.metrics_port}/metrics")
    assert 'ragline_retriever_query_seconds_count{mode="keyword"}' in metrics
    assert 'ragline_retriever_upserted_chunks_total{outcome="inserted"}' in metrics


async def test_concurrent_upserts_of_one_document_write_it_once(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    name = await new_collection()
    request = pb.UpsertDocumentRequest(
        tenant=TENANT,
        collection=name,
        document_id="raced",
        chunks=[chunk(f"part {i}", axis(i)) for i in range(4)],
    )
    replies = await asyncio.gather(*(stub.UpsertDocument(request) for _ in range(4)))
    assert sorted((r.inserted_chunks, r.unchanged_chunks) for r in replies) == [
        (0, 4),
        (0, 4),
        (0, 4),
        (4, 0),
    ]
    collection = await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=name))
    assert (collection.collection.generation, collection.collection.chunk_count) == (1, 4)
