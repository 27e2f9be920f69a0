"""A synchronous IngestDocuments is all or nothing, even when the retriever refuses a document midway.

The documents of one request are stored in one retriever transaction (BatchUpsertDocuments),
so a document refused there takes back those written before it in the same request.
"""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ragline.client import DocumentToIngest, RaglineClient
from ragline.v1 import gateway_service_pb2
from ragline_gateway.formats import MAX_JSON_DEPTH

pytestmark = pytest.mark.integration

COLLECTION = "atomic"


def _field(error: grpc.aio.AioRpcError) -> str:
    """The field an INVALID_ARGUMENT names in its BadRequest detail."""
    status = rpc_status.from_call(error)
    assert status is not None, error
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details), status
    return str(bad_request.field_violations[0].field)


async def _stored(client: RaglineClient) -> tuple[object, list[tuple[str, str]]]:
    """The collection's documents and what a search finds in it."""
    listed = await client.list_documents(collection=COLLECTION)
    found = await client.search("lighthouse ships coast", collection=COLLECTION)
    return listed, [(hit.document_id, hit.text) for hit in found.hits]


async def _refused(client: RaglineClient, documents: list[DocumentToIngest]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.ingest(documents, collection=COLLECTION)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    return raised.value


@pytest.fixture(scope="module")
async def kept(client: RaglineClient) -> gateway_service_pb2.IngestDocumentsResponse:
    return await client.ingest(
        [DocumentToIngest("kept.txt", b"The lighthouse guides ships along the rocky coast.")],
        collection=COLLECTION,
    )


async def test_a_document_refused_midway_takes_back_the_documents_before_it(
    client: RaglineClient, kept: object
) -> None:
    before = await _stored(client)
    documents = [
        DocumentToIngest("kept.txt", b"This would replace the lighthouse text."),
        DocumentToIngest("nan.txt", b"A lighthouse score.", metadata={"score": float("nan")}),
        DocumentToIngest("third.txt", b"Another lighthouse on another coast."),
    ]
    error = await _refused(client, documents)
    assert _field(error).startswith("documents[1]")
    assert "documents[1].metadata.score is nan" in (error.details() or "")
    assert await _stored(client) == before
    # The same request without the bad document stores both of the others.
    stored = await client.ingest([documents[0], documents[2]], collection=COLLECTION)
    assert [r.document_id for r in stored.results] == ["kept.txt", "third.txt"]
    await client.ingest(
        [DocumentToIngest("kept.txt", b"The lighthouse guides ships along the rocky coast.")],
        collection=COLLECTION,
    )
    await client.delete_document("third.txt", collection=COLLECTION)


async def test_a_json_lines_record_nested_too_deep_is_refused_naming_its_line(
    client: RaglineClient, kept: object
) -> None:
    before = await _stored(client)
    deep = b'{"text": "The lighthouse.", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    records = b'{"id": "a", "text": "A lighthouse keeper."}\n' + deep
    error = await _refused(
        client, [DocumentToIngest("records.jsonl", records, media_type="application/jsonl")]
    )
    assert _field(error) == "documents[0].content"
    assert f"line 2 nests objects or arrays more than {MAX_JSON_DEPTH} levels deep" in (error.details() or "")
    assert await _stored(client) == before


async def test_a_json_lines_record_as_deep_as_allowed_is_stored_with_its_metadata(
    client: RaglineClient, kept: object
) -> None:
    deep: object = "bottom"
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = {"x": deep}
    record = json.dumps({"id": "deep", "text": "A deeply described lighthouse.", "deep": deep})
    await client.ingest(
        [DocumentToIngest("nested.jsonl", record.encode(), media_type="application/jsonl")],
        collection=COLLECTION,
    )
    stored = await client.get_document("nested.jsonl#deep", collection=COLLECTION)
    assert json_format.MessageToDict(stored.metadata)["deep"] == deep
    await client.delete_document("nested.jsonl#deep", collection=COLLECTION)


async def test_more_documents_than_one_transaction_takes_are_refused_before_any_work(
    client: RaglineClient, kept: object
) -> None:
    before = await _stored(client)
    records = "\n".join(json.dumps({"text": f"Lighthouse number {i}."}) for i in range(1001))
    error = await _refused(
        client, [DocumentToIngest("many.jsonl", records.encode(), media_type="application/jsonl")]
    )
    assert _field(error) == "documents"
    assert "1001 documents" in (error.details() or "")
    assert "the limit is 1000" in (error.details() or "")
    assert await _stored(client) == before
