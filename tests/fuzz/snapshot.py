"""What a collection holds, read straight from the retriever, to prove that rejected requests wrote nothing.

`snapshot` reads the collection's counters and generation, every stored document and, when asked, every
chunk hash and the results of a few fixed searches; two snapshots compare equal when nothing was written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ragline.v1 import common_pb2, embedder_service_pb2, gateway_service_pb2, retriever_service_pb2
from ragline.v1.embedder_service_pb2_grpc import EmbedderServiceStub
from ragline.v1.gateway_service_pb2_grpc import GatewayServiceStub
from ragline.v1.retriever_service_pb2_grpc import RetrieverServiceStub

SNAPSHOT_QUERIES = ("eiffel tower paris", "yellow bananas potassium", "water boils")
"""Searches whose results are part of a full snapshot."""

TIMEOUT = 30.0
"""Deadline of every call the snapshot makes."""

TENANT = "default"
"""The tenant the gateway stores the fuzzed collections under (its `default` tenant); the retriever's
own RPCs are confined to it."""


def snapshot(retriever: grpc.Channel, embedder: grpc.Channel, collection: str, full: bool) -> dict[str, Any]:
    """The collection's stored state; `full` adds chunk hashes and search results (slower)."""
    stub = RetrieverServiceStub(retriever)
    try:
        reply = stub.GetStoredCollection(
            retriever_service_pb2.GetStoredCollectionRequest(tenant=TENANT, name=collection), timeout=TIMEOUT
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return {"missing": True}
    info = reply.collection
    state: dict[str, Any] = {
        "generation": info.generation,
        "document_count": info.document_count,
        "chunk_count": info.chunk_count,
        "documents": {},
    }
    request = retriever_service_pb2.ListStoredDocumentsRequest(
        tenant=TENANT, collection=collection, page_size=100
    )
    for doc in _all_pages(stub.ListStoredDocuments, request, "documents"):
        state["documents"][doc.document_id] = MessageToDict(doc)
    if full:
        state["chunk_hashes"] = {
            doc_id: list(
                stub.LookupChunkHashes(
                    retriever_service_pb2.LookupChunkHashesRequest(
                        tenant=TENANT, collection=collection, document_id=doc_id
                    ),
                    timeout=TIMEOUT,
                ).stored_hashes
            )
            for doc_id in state["documents"]
        }
        state["searches"] = _searches(stub, embedder, collection)
    return json.loads(json.dumps(state, sort_keys=True))  # type: ignore[no-any-return]


def _searches(stub: RetrieverServiceStub, embedder: grpc.Channel, collection: str) -> dict[str, list[Any]]:
    embeddings = (
        EmbedderServiceStub(embedder)
        .Embed(
            embedder_service_pb2.EmbedRequest(
                texts=SNAPSHOT_QUERIES, input_type=embedder_service_pb2.INPUT_TYPE_QUERY
            ),
            timeout=TIMEOUT,
        )
        .embeddings
    )
    results = {}
    for query, embedding in zip(SNAPSHOT_QUERIES, embeddings, strict=True):
        reply = stub.SearchChunks(
            retriever_service_pb2.SearchChunksRequest(
                tenant=TENANT,
                collection=collection,
                query_text=query,
                query_embedding=embedding.values,
                top_k=10,
                mode=common_pb2.SEARCH_MODE_HYBRID,
            ),
            timeout=TIMEOUT,
        )
        results[query] = [
            (h.chunk_id, h.document_id, h.ordinal, h.text, round(h.score, 4)) for h in reply.hits
        ]
    return results


def wait_until_no_pending_documents(gateway: grpc.Channel, collection: str, timeout: float) -> bool:
    """Waits until every document queued in the collection's ingest jobs is done, skipped, failed or cancelled;
    False if some are still outstanding at `timeout` (then a change to the collection cannot be attributed)."""
    stub = GatewayServiceStub(gateway)
    deadline = time.monotonic() + timeout
    while True:
        request = gateway_service_pb2.ListIngestJobsRequest(collection=collection, page_size=100)
        outstanding = sum(
            job.total_documents
            - job.done_documents
            - job.skipped_documents
            - job.failed_documents
            - job.cancelled_documents
            for job in _all_pages(stub.ListIngestJobs, request, "jobs")
        )
        if not outstanding:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _all_pages(list_call: Callable[..., Any], request: Message, items: str) -> Iterator[Any]:
    """Every item of a paginated list RPC, following next_page_token."""
    while True:
        page = list_call(request, timeout=TIMEOUT)
        yield from getattr(page, items)
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token  # type: ignore[attr-defined]
