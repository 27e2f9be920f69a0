"""Tenant confinement inside the retriever: every RPC is confined to the request's tenant.

Two tenants each have a collection named `default` holding the same document ids; tenant B also
has a collection and a job tenant A has nothing like. Whatever A asks about B's data is NOT_FOUND
with the words a missing one gets (existence must not leak), and B's data is the same afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from test_retriever_service import axis, chunk, field_violation, struct

from ragline.v1 import common_pb2
from ragline.v1 import ingest_queue_service_pb2 as queue_pb
from ragline.v1 import ingest_queue_service_pb2_grpc as queue_grpc
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever.chunks import text_hash

pytestmark = pytest.mark.integration

A, B = "acme", "globex"
SHARED = "default"
"""The collection name both tenants have."""
PRIVATE = "globex-only"
"""A collection only B has."""
DOCUMENTS = ("doc-1", "doc-2")
MODES = (common_pb2.SEARCH_MODE_VECTOR, common_pb2.SEARCH_MODE_KEYWORD, common_pb2.SEARCH_MODE_HYBRID)


def _text(tenant: str, document_id: str) -> str:
    return f"the {tenant} report {document_id} on tower engineering"


def _upsert(tenant: str, collection: str, document_id: str, text: str = "") -> pb.UpsertDocumentRequest:
    return pb.UpsertDocumentRequest(
        tenant=tenant,
        collection=collection,
        document_id=document_id,
        metadata=struct(owner=tenant),
        chunks=[chunk(text or _text(tenant, document_id), axis(0))],
    )


async def _error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


@pytest.fixture(scope="module")
async def job_of_b(stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub) -> str:
    """Both tenants' `default` collections with the same document ids (and one more in B's), B's
    private collection with a document, and an open job of B's (no documents yet, so no other test's claim takes one)."""
    for tenant in (A, B):
        await stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(tenant=tenant, name=SHARED, embedding_model="m", dimension=8)
        )
        for document_id in DOCUMENTS:
            await stub.UpsertDocument(_upsert(tenant, SHARED, document_id))
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=B, name=PRIVATE, embedding_model="m", dimension=8)
    )
    await stub.UpsertDocument(_upsert(B, SHARED, "b-only"))
    await stub.UpsertDocument(_upsert(B, PRIVATE, "doc-1"))
    job = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=B, collection=SHARED, accepting_documents=True)
    )
    return job.job.job_id


async def _state(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, tenant: str, job_id: str
) -> dict[str, Any]:
    """Everything `tenant` can read of its collections, documents, chunks, searches and job."""
    state: dict[str, Any] = {}
    listed = await stub.ListStoredCollections(pb.ListStoredCollectionsRequest(tenant=tenant))
    for collection in listed.collections:
        name = collection.name
        documents = await stub.ListStoredDocuments(
            pb.ListStoredDocumentsRequest(tenant=tenant, collection=name)
        )
        hashes = {
            d.document_id: list(
                (
                    await stub.LookupChunkHashes(
                        pb.LookupChunkHashesRequest(tenant=tenant, collection=name, document_id=d.document_id)
                    )
                ).stored_hashes
            )
            for d in documents.documents
        }
        searches = [
            [
                (hit.document_id, hit.text)
                for hit in (
                    await stub.SearchChunks(
                        pb.SearchChunksRequest(
                            tenant=tenant,
                            collection=name,
                            query_text="tower report",
                            query_embedding=axis(0),
                            mode=mode,
                        )
                    )
                ).hits
            ]
            for mode in MODES
        ]
        state[name] = {
            "collection": MessageToDict(collection),
            "documents": [MessageToDict(d) for d in documents.documents],
            "hashes": hashes,
            "searches": searches,
        }
    if job_id:
        job = await queue.GetStoredIngestJob(queue_pb.GetStoredIngestJobRequest(tenant=tenant, job_id=job_id))
        state["job"] = MessageToDict(job.job)
    return state


async def test_two_tenants_collections_of_one_name_hold_their_own_documents(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, job_of_b: str
) -> None:
    for tenant, documents in ((A, DOCUMENTS), (B, ("b-only", *DOCUMENTS))):
        state = await _state(stub, queue, tenant, "")
        shared = state[SHARED]
        assert [d["documentId"] for d in shared["documents"]] == list(documents)
        assert {d["metadata"]["owner"] for d in shared["documents"]} == {tenant}
        assert shared["collection"]["documentCount"] == str(len(documents))
        # Every search mode finds the tenant's own chunks only.
        for hits in shared["searches"]:
            assert hits and all(text.startswith(f"the {tenant} ") for _, text in hits), hits
        assert shared["hashes"] == {d: [text_hash(_text(tenant, d))] for d in documents}
    assert set(await _state(stub, queue, A, "")) == {SHARED}
    # The other tenant's texts are not "stored" for reuse: their embeddings never cross over.
    theirs = await stub.LookupChunkHashes(
        pb.LookupChunkHashesRequest(
            tenant=A, collection=SHARED, content_hashes=[text_hash(_text(B, "doc-1"))]
        )
    )
    assert list(theirs.stored_hashes) == []
    reuse = await _error(
        stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=A,
                collection=SHARED,
                document_id="reuse",
                chunks=[common_pb2.ChunkInput(text=_text(B, "doc-1"), token_count=3)],
            )
        )
    )
    assert reuse.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_another_tenants_collection_document_and_job_are_not_found_and_unchanged(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, job_of_b: str
) -> None:
    before = await _state(stub, queue, B, job_of_b)
    missing_job = str(uuid.uuid4())

    def on_collection(name: str) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        """Every RPC that names a collection, as A, on the collection `name`."""
        upsert = _upsert(A, name, "doc-1", text="overwritten by acme")
        return [
            (
                "GetStoredCollection",
                lambda: stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=A, name=name)),
            ),
            ("UpsertDocument", lambda: stub.UpsertDocument(upsert)),
            (
                "BatchUpsertDocuments",
                lambda: stub.BatchUpsertDocuments(
                    pb.BatchUpsertDocumentsRequest(tenant=A, collection=name, requests=[upsert])
                ),
            ),
            *[
                (
                    f"SearchChunks {common_pb2.SearchMode.Name(mode)}",
                    lambda mode=mode: stub.SearchChunks(
                        pb.SearchChunksRequest(
                            tenant=A, collection=name, query_text="tower", query_embedding=axis(0), mode=mode
                        )
                    ),
                )
                for mode in MODES
            ],
            (
                "GetStoredDocument",
                lambda: stub.GetStoredDocument(
                    pb.GetStoredDocumentRequest(tenant=A, collection=name, document_id="doc-1")
                ),
            ),
            (
                "ListStoredDocuments",
                lambda: stub.ListStoredDocuments(pb.ListStoredDocumentsRequest(tenant=A, collection=name)),
            ),
            (
                "DeleteStoredDocument",
                lambda: stub.DeleteStoredDocument(
                    pb.DeleteStoredDocumentRequest(tenant=A, collection=name, document_id="doc-1")
                ),
            ),
            (
                "LookupChunkHashes",
                lambda: stub.LookupChunkHashes(
                    pb.LookupChunkHashesRequest(tenant=A, collection=name, document_id="doc-1")
                ),
            ),
            (
                "CreateStoredIngestJob",
                lambda: queue.CreateStoredIngestJob(
                    queue_pb.CreateStoredIngestJobRequest(
                        tenant=A,
                        collection=name,
                        documents=[common_pb2.DocumentContent(document_id="x", content=b"x")],
                    )
                ),
            ),
            # Last: had it worked, nothing else would be left to look at.
            (
                "DeleteStoredCollection",
                lambda: stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=A, name=name)),
            ),
        ]

    def on_job(job_id: str) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        """Every RPC that names a job, as A, on the job `job_id`."""
        return [
            (
                "GetStoredIngestJob",
                lambda: queue.GetStoredIngestJob(queue_pb.GetStoredIngestJobRequest(tenant=A, job_id=job_id)),
            ),
            (
                "AppendStoredIngestJob",
                lambda: queue.AppendStoredIngestJob(
                    queue_pb.AppendStoredIngestJobRequest(
                        tenant=A,
                        job_id=job_id,
                        documents=[common_pb2.DocumentContent(document_id="x", content=b"x")],
                        last=True,
                    )
                ),
            ),
            (
                "CancelStoredIngestJob",
                lambda: queue.CancelStoredIngestJob(
                    queue_pb.CancelStoredIngestJobRequest(tenant=A, job_id=job_id)
                ),
            ),
        ]

    cases = [
        (on_collection(PRIVATE), on_collection("never-created"), PRIVATE, "never-created"),
        (on_job(job_of_b), on_job(missing_job), job_of_b, missing_job),
    ]
    for theirs, missing, target, absent in cases:
        for (rpc, call), (_, call_missing) in zip(theirs, missing, strict=True):
            error, expected = await _error(call()), await _error(call_missing())
            assert error.code() == expected.code() == grpc.StatusCode.NOT_FOUND, (rpc, error)
            # Word for word what a target that does not exist gets.
            assert error.details() == (expected.details() or "").replace(absent, target), rpc
            assert field_violation(error) == field_violation(expected), rpc

    # In the collection name both tenants have, B's document is as missing to A as one never stored.
    for rpc, request in (
        ("GetStoredDocument", pb.GetStoredDocumentRequest(tenant=A, collection=SHARED, document_id="b-only")),
        (
            "DeleteStoredDocument",
            pb.DeleteStoredDocumentRequest(tenant=A, collection=SHARED, document_id="b-only"),
        ),
    ):
        error = await _error(getattr(stub, rpc)(request))
        request.document_id = "never-stored"
        expected = await _error(getattr(stub, rpc)(request))
        assert error.code() == expected.code() == grpc.StatusCode.NOT_FOUND, rpc
        assert error.details() == (expected.details() or "").replace("never-stored", "b-only"), rpc
    hashes = await stub.LookupChunkHashes(
        pb.LookupChunkHashesRequest(tenant=A, collection=SHARED, document_id="b-only")
    )
    assert list(hashes.stored_hashes) == []
    jobs = await queue.ListStoredIngestJobs(queue_pb.ListStoredIngestJobsRequest(tenant=A))
    assert job_of_b not in [job.job_id for job in jobs.jobs]
    listed = await queue.ListStoredIngestJobs(
        queue_pb.ListStoredIngestJobsRequest(tenant=A, collection=PRIVATE)
    )
    assert list(listed.jobs) == []

    assert await _state(stub, queue, B, job_of_b) == before


async def test_a_tenants_writes_to_a_shared_name_leave_the_other_tenant_unchanged(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, job_of_b: str
) -> None:
    before = await _state(stub, queue, B, job_of_b)
    await stub.UpsertDocument(_upsert(A, SHARED, "doc-1", text="acme rewrote its tower report"))
    await stub.BatchUpsertDocuments(
        pb.BatchUpsertDocumentsRequest(
            tenant=A, collection=SHARED, requests=[_upsert("", SHARED, "doc-2", text="acme again")]
        )
    )
    await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant=A, collection=SHARED, document_id="doc-1")
    )
    ours = await stub.ListStoredDocuments(pb.ListStoredDocumentsRequest(tenant=A, collection=SHARED))
    assert [d.document_id for d in ours.documents] == ["doc-2"]
    assert await _state(stub, queue, B, job_of_b) == before
    # Restored for the other tests of the module.
    for document_id in DOCUMENTS:
        await stub.UpsertDocument(_upsert(A, SHARED, document_id))


async def test_page_tokens_do_not_cross_tenants(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, job_of_b: str
) -> None:
    first = await stub.ListStoredDocuments(
        pb.ListStoredDocumentsRequest(tenant=A, collection=SHARED, page_size=1)
    )
    assert [d.metadata["owner"] for d in first.documents] == [A]
    assert first.next_page_token
    crossed = await _error(
        stub.ListStoredDocuments(
            pb.ListStoredDocumentsRequest(tenant=B, collection=SHARED, page_token=first.next_page_token)
        )
    )
    # NOT_FOUND like another tenant's collection or job (the token alone decides: no row is read).
    assert crossed.code() == grpc.StatusCode.NOT_FOUND
    # Page by page, each tenant's listing holds its own rows only.
    for tenant, expected in ((A, [SHARED]), (B, sorted([SHARED, PRIVATE]))):
        names, token = [], ""
        while True:
            page = await stub.ListStoredCollections(
                pb.ListStoredCollectionsRequest(tenant=tenant, page_size=1, page_token=token)
            )
            names += [c.name for c in page.collections]
            if not (token := page.next_page_token):
                break
        assert names == expected
    collections = await stub.ListStoredCollections(pb.ListStoredCollectionsRequest(tenant=B, page_size=1))
    assert collections.next_page_token
    refused = await _error(
        stub.ListStoredCollections(
            pb.ListStoredCollectionsRequest(tenant=A, page_token=collections.next_page_token)
        )
    )
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=B, collection=PRIVATE, accepting_documents=True)
    )
    jobs = await queue.ListStoredIngestJobs(queue_pb.ListStoredIngestJobsRequest(tenant=B, page_size=1))
    assert jobs.next_page_token
    refused = await _error(
        queue.ListStoredIngestJobs(
            queue_pb.ListStoredIngestJobsRequest(tenant=A, page_token=jobs.next_page_token)
        )
    )
    assert refused.code() == grpc.StatusCode.NOT_FOUND


async def test_claims_carry_their_jobs_tenant_and_cannot_store_elsewhere(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, job_of_b: str
) -> None:
    created = {}
    for tenant in (A, B):
        job = await queue.CreateStoredIngestJob(
            queue_pb.CreateStoredIngestJobRequest(
                tenant=tenant,
                collection=SHARED,
                documents=[
                    common_pb2.DocumentContent(document_id="queued", content=b"t", media_type="text/plain")
                ],
            )
        )
        created[job.job.job_id] = tenant
    claimed = list(
        (
            await queue.ClaimIngestWork(
                queue_pb.ClaimIngestWorkRequest(max_documents=100, lease_seconds=60, max_attempts=3)
            )
        ).documents
    )
    # One claim serves both tenants, each document naming its own.
    assert {(c.claim.job_id, c.tenant, c.collection) for c in claimed} == {
        (job_id, tenant, SHARED) for job_id, tenant in created.items()
    }
    of_b = next(c for c in claimed if c.tenant == B)
    before = await _state(stub, queue, B, of_b.claim.job_id)
    # A's tenant with B's claim: as if the job did not exist, though A has a `default` too.
    stolen = _upsert(A, SHARED, "doc-1", text="stored with a claim of globex")
    stolen.claim.CopyFrom(of_b.claim)
    error = await _error(stub.UpsertDocument(stolen))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"ingest job {of_b.claim.job_id} does not exist"
    # B's claim pointed at B's other collection: the job says where its documents go.
    elsewhere = _upsert(B, PRIVATE, "doc-1", text="stored elsewhere")
    elsewhere.claim.CopyFrom(of_b.claim)
    error = await _error(stub.UpsertDocument(elsewhere))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error) == "collection"
    assert await _state(stub, queue, B, of_b.claim.job_id) == before
    assert (await _state(stub, queue, A, ""))[SHARED]["documents"][0]["metadata"]["owner"] == A
    # Each stored as its worker would: in the claimed document's tenant, which finishes both jobs.
    for item in claimed:
        stored = _upsert(item.tenant, item.collection, "doc-1")
        stored.claim.CopyFrom(item.claim)
        await stub.UpsertDocument(stored)
    for job_id, tenant in created.items():
        job = await queue.GetStoredIngestJob(queue_pb.GetStoredIngestJobRequest(tenant=tenant, job_id=job_id))
        assert job.job.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED, job


TENANTED_REQUESTS = [
    lambda: pb.CreateStoredCollectionRequest(name="c", dimension=8),
    lambda: pb.GetStoredCollectionRequest(name=SHARED),
    lambda: pb.ListStoredCollectionsRequest(),
    lambda: pb.DeleteStoredCollectionRequest(name=SHARED),
    lambda: _upsert("", SHARED, "doc-1"),
    lambda: pb.BatchUpsertDocumentsRequest(collection=SHARED, requests=[_upsert("", SHARED, "doc-1")]),
    lambda: pb.SearchChunksRequest(collection=SHARED, query_text="t", query_embedding=axis(0)),
    lambda: pb.GetStoredDocumentRequest(collection=SHARED, document_id="doc-1"),
    lambda: pb.ListStoredDocumentsRequest(collection=SHARED),
    lambda: pb.DeleteStoredDocumentRequest(collection=SHARED, document_id="doc-1"),
    lambda: pb.LookupChunkHashesRequest(collection=SHARED, document_id="doc-1"),
    lambda: queue_pb.CreateStoredIngestJobRequest(collection=SHARED, accepting_documents=True),
    lambda: queue_pb.AppendStoredIngestJobRequest(job_id=str(uuid.uuid4()), last=True),
    lambda: queue_pb.GetStoredIngestJobRequest(job_id=str(uuid.uuid4())),
    lambda: queue_pb.ListStoredIngestJobsRequest(),
    lambda: queue_pb.CancelStoredIngestJobRequest(job_id=str(uuid.uuid4())),
]


@pytest.mark.parametrize("make", TENANTED_REQUESTS, ids=lambda make: type(make()).__name__)
async def test_a_request_without_a_tenant_is_refused(
    stub: pb_grpc.RetrieverServiceStub,
    queue: queue_grpc.IngestQueueServiceStub,
    job_of_b: str,
    make: Callable[[], Any],
) -> None:
    request = make()
    service = queue if request.DESCRIPTOR.file.name.endswith("ingest_queue_service.proto") else stub
    method = getattr(service, type(request).__name__.removesuffix("Request"))
    for tenant in ("", "  "):
        request.tenant = tenant
        error = await _error(method(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("tenant is required"), error.details()
        assert field_violation(error) == "tenant"


async def test_a_batch_documents_tenant_is_empty_or_the_batchs(
    stub: pb_grpc.RetrieverServiceStub, job_of_b: str
) -> None:
    error = await _error(
        stub.BatchUpsertDocuments(
            pb.BatchUpsertDocumentsRequest(
                tenant=A,
                collection=SHARED,
                requests=[_upsert(A, SHARED, "doc-1"), _upsert(B, SHARED, "doc-2")],
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(error) == "requests[1].tenant"
    assert B not in (error.details() or "")
