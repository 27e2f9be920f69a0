"""BatchUpsertDocuments stores the documents of one call in one transaction: all of them, or none."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from test_retriever_service import TENANT, axis, chunk, field_violation, struct

from ragline.v1 import common_pb2, ingest_queue_service_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

NewCollection = Callable[..., Awaitable[str]]


def document(
    document_id: str, *chunks: common_pb2.ChunkInput, **metadata: object
) -> pb.UpsertDocumentRequest:
    """A document of a batch: no collection of its own, the batch's applies."""
    return pb.UpsertDocumentRequest(
        tenant=TENANT, document_id=document_id, chunks=chunks, metadata=struct(**metadata)
    )


async def stored(stub: pb_grpc.RetrieverServiceStub, name: str) -> tuple[list[str], list[str], int]:
    """The ids of the collection's documents, the texts a vector search along axis 0 finds, and its generation."""
    listed = await stub.ListStoredDocuments(pb.ListStoredDocumentsRequest(tenant=TENANT, collection=name))
    found = await stub.SearchChunks(
        pb.SearchChunksRequest(
            tenant=TENANT,
            collection=name,
            query_embedding=axis(0),
            mode=common_pb2.SEARCH_MODE_VECTOR,
            top_k=20,
        )
    )
    return [d.document_id for d in listed.documents], [h.text for h in found.hits], found.generation


async def test_a_batch_stores_every_document_and_says_what_each_changed(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection
) -> None:
    name = await new_collection()
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection=name, document_id="old", chunks=[chunk("old text", axis(0))]
        )
    )
    reply = await stub.BatchUpsertDocuments(
        pb.BatchUpsertDocumentsRequest(
            tenant=TENANT,
            collection=name,
            requests=[
                document("old", chunk("old text", axis(0)), chunk("more", axis(1))),
                document("new", chunk("new text", axis(2)), lang="en"),
                pb.UpsertDocumentRequest(
                    tenant=TENANT, collection=name, document_id="same", chunks=[chunk("old text", [])]
                ),
            ],
        )
    )
    assert [r.document.document_id for r in reply.responses] == ["old", "new", "same"]
    assert [(r.unchanged_chunks, r.inserted_chunks) for r in reply.responses] == [(1, 1), (0, 1), (0, 1)]
    assert reply.generation == reply.responses[-1].generation == 4
    assert reply.responses[1].document.metadata == struct(lang="en")
    documents, texts, generation = await stored(stub, name)
    assert documents == ["new", "old", "same"]
    assert sorted(texts) == ["more", "new text", "old text", "old text"]
    assert generation == reply.generation


@pytest.mark.parametrize(
    ("second", "field"),
    [
        (document("b", chunk("fine", axis(0)), chunk("short", [1.0] * 7)), "requests[1].chunks[1].embedding"),
        # An embedding left out for text the collection does not store: found only in the transaction.
        (document("b", chunk("never stored", [])), "requests[1].chunks[0].embedding"),
        # Values JSON or PostgreSQL's jsonb cannot hold (unless a check before the transaction refuses them).
        (document("b", chunk("fine", axis(0)), score=float("nan")), "requests[1].metadata"),
        (document("b", chunk("fine", axis(0)), note="a\x00b"), "requests[1]"),
    ],
    ids=["wrong-dimension", "no-embedding-to-reuse", "nan-metadata", "nul-in-metadata"],
)
async def test_a_batch_that_fails_midway_stores_nothing(
    stub: pb_grpc.RetrieverServiceStub,
    new_collection: NewCollection,
    second: pb.UpsertDocumentRequest,
    field: str,
) -> None:
    name = await new_collection()
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection=name, document_id="kept", chunks=[chunk("original", axis(0))]
        )
    )
    before = await stored(stub, name)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.BatchUpsertDocuments(
            pb.BatchUpsertDocumentsRequest(
                tenant=TENANT,
                collection=name,
                requests=[
                    # Written in the transaction before the second fails: an update and a new document.
                    document("kept", chunk("replaced", axis(0))),
                    second,
                    document("c", chunk("third", axis(0))),
                ],
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value).startswith(field)
    assert (raised.value.details() or "").startswith("requests[1] (document 'b'): ")
    assert await stored(stub, name) == before == (["kept"], ["original"], 1)


def batch(*requests: pb.UpsertDocumentRequest, collection: str = "{name}") -> pb.BatchUpsertDocumentsRequest:
    return pb.BatchUpsertDocumentsRequest(tenant=TENANT, collection=collection, requests=requests)


ONE = document("a", chunk("t", axis(0)))


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (batch(ONE, collection=""), "INVALID_ARGUMENT", "collection"),
        (batch(ONE, collection="nope"), "NOT_FOUND", "requests[0].collection"),
        (batch(), "INVALID_ARGUMENT", "requests"),
        (
            batch(*[document(f"d{i}", chunk("t", axis(0))) for i in range(1001)]),
            "INVALID_ARGUMENT",
            "requests",
        ),
        (batch(ONE, document("")), "INVALID_ARGUMENT", "requests[1].document_id"),
        (batch(ONE, document("b")), "INVALID_ARGUMENT", "requests[1].chunks"),
        (batch(ONE, ONE), "INVALID_ARGUMENT", "requests[1].document_id"),
        (
            batch(
                ONE,
                pb.UpsertDocumentRequest(
                    tenant=TENANT, collection="other", document_id="b", chunks=[chunk("t", axis(0))]
                ),
            ),
            "INVALID_ARGUMENT",
            "requests[1].collection",
        ),
        (
            batch(
                pb.UpsertDocumentRequest(
                    tenant=TENANT,
                    document_id="a",
                    chunks=[chunk("t", axis(0))],
                    claim=ingest_queue_service_pb2.IngestClaim(),
                )
            ),
            "INVALID_ARGUMENT",
            "requests[0].claim",
        ),
    ],
    ids=[
        "no-collection",
        "unknown-collection",
        "empty",
        "too-many",
        "no-document-id",
        "no-chunks",
        "same-document-twice",
        "other-collection",
        "claim",
    ],
)
async def test_a_batch_is_validated_naming_the_document_at_fault(
    stub: pb_grpc.RetrieverServiceStub,
    new_collection: NewCollection,
    request_: pb.BatchUpsertDocumentsRequest,
    code: str,
    field: str,
) -> None:
    request_.collection = request_.collection.format(name=await new_collection())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.BatchUpsertDocuments(request_)
    assert (raised.value.code().name, field_violation(raised.value)) == (code, field)
