"""Per-tenant storage quotas, on a retriever of their own started with RETRIEVER_TENANT_MAX_DOCUMENTS
and RETRIEVER_TENANT_MAX_CHUNKS set: an upsert past a quota is RESOURCE_EXHAUSTED and changes
nothing, in a batch, under concurrent upserts and for claimed ingest documents alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from test_retriever_service import axis, chunk

from ragline.v1 import common_pb2
from ragline.v1 import ingest_queue_service_pb2 as queue_pb
from ragline.v1 import ingest_queue_service_pb2_grpc as queue_grpc
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever.quotas import Growth, QuotaExceeded, TenantQuota, check_quota

pytestmark = pytest.mark.integration

# The quotas of the quota retriever (conftest).
MAX_DOCUMENTS = 4
MAX_CHUNKS = 10
COLLECTION = "quota"


@pytest.fixture(scope="module")
async def quota_channel(quota_retriever: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(quota_retriever) as channel:
        yield channel


@pytest.fixture
async def stub(quota_channel: grpc.aio.Channel) -> pb_grpc.RetrieverServiceStub:
    return pb_grpc.RetrieverServiceStub(quota_channel)


@pytest.fixture
async def queue(quota_channel: grpc.aio.Channel) -> queue_grpc.IngestQueueServiceStub:
    return queue_grpc.IngestQueueServiceStub(quota_channel)


def _upsert(
    tenant: str, document_id: str, chunks: int = 1, text: str = "text", collection: str = COLLECTION
) -> pb.UpsertDocumentRequest:
    return pb.UpsertDocumentRequest(
        tenant=tenant,
        collection=collection,
        document_id=document_id,
        chunks=[chunk(f"{text} {document_id} {i}", axis(i % 8)) for i in range(chunks)],
    )


async def _tenant(stub: pb_grpc.RetrieverServiceStub, tenant: str) -> None:
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=tenant, name=COLLECTION, embedding_model="m", dimension=8)
    )


async def _stored(
    stub: pb_grpc.RetrieverServiceStub, tenant: str, collection: str = COLLECTION
) -> list[tuple[str, int, str]]:
    """The documents of the tenant's collection, with their chunk counts and content hashes."""
    reply = await stub.ListStoredDocuments(
        pb.ListStoredDocumentsRequest(tenant=tenant, collection=collection)
    )
    return [(d.document_id, d.chunk_count, d.content_hash) for d in reply.documents]


async def _refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    return error


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    """The `google.rpc` details of an error, packed."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return list(status_pb2.Status.FromString(value).details)
    return []


def _quota_failure(error: grpc.aio.AioRpcError) -> error_details_pb2.QuotaFailure:
    for detail in _details(error):
        failure = error_details_pb2.QuotaFailure()
        if detail.Unpack(failure):
            return failure
    raise AssertionError(f"no QuotaFailure detail in {error!r}")


async def test_the_document_quota_refuses_the_upsert_past_it_and_stores_nothing(
    stub: pb_grpc.RetrieverServiceStub,
) -> None:
    await _tenant(stub, "docs")
    for i in range(MAX_DOCUMENTS):
        await stub.UpsertDocument(_upsert("docs", f"d{i}"))
    before = await _stored(stub, "docs")
    error = await _refused(stub.UpsertDocument(_upsert("docs", "one-too-many")))
    assert error.details() == (
        "storage quota exceeded: the tenant may store 4 documents (RETRIEVER_TENANT_MAX_DOCUMENTS) and stores 4; "
        "this upsert would add 1, making 5. Nothing was stored: delete documents the tenant no longer needs, "
        "or have the quota raised"
    )
    assert _quota_failure(error).violations[0].subject == "RETRIEVER_TENANT_MAX_DOCUMENTS"
    # No retry delay: waiting frees nothing.
    assert not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in _details(error))
    assert await _stored(stub, "docs") == before
    # Rewriting a stored document adds none, and the quota is each tenant's own.
    await stub.UpsertDocument(_upsert("docs", "d0", text="rewritten"))
    await _tenant(stub, "other")
    await stub.UpsertDocument(_upsert("other", "d0"))
    # Deleting one makes room for one.
    await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant="docs", collection=COLLECTION, document_id="d3")
    )
    await stub.UpsertDocument(_upsert("docs", "one-too-many"))
    assert len(await _stored(stub, "docs")) == MAX_DOCUMENTS


async def test_the_chunk_quota_counts_a_documents_growth(stub: pb_grpc.RetrieverServiceStub) -> None:
    await _tenant(stub, "chunks")
    await stub.UpsertDocument(_upsert("chunks", "big", chunks=6))
    await stub.UpsertDocument(_upsert("chunks", "small", chunks=4))
    before = await _stored(stub, "chunks")
    error = await _refused(stub.UpsertDocument(_upsert("chunks", "small", chunks=5, text="grown")))
    assert (
        "may store 10 chunks (RETRIEVER_TENANT_MAX_CHUNKS) and stores 10; this upsert would add 1, making 11"
        in (error.details() or "")
    )
    assert await _stored(stub, "chunks") == before
    # A document that shrinks is always let through, even by a tenant at its quota.
    await stub.UpsertDocument(_upsert("chunks", "small", chunks=3, text="shrunk"))
    assert [count for _, count, _ in await _stored(stub, "chunks")] == [6, 3]


async def test_a_batch_past_the_quota_stores_none_of_its_documents(
    stub: pb_grpc.RetrieverServiceStub,
) -> None:
    await _tenant(stub, "batch")
    await stub.UpsertDocument(_upsert("batch", "kept"))
    before = await _stored(stub, "batch")
    batch = pb.BatchUpsertDocumentsRequest(
        tenant="batch",
        collection=COLLECTION,
        requests=[
            _upsert("", "kept", text="changed"),
            *[_upsert("", f"new-{i}") for i in range(MAX_DOCUMENTS)],
        ],
    )
    error = await _refused(stub.BatchUpsertDocuments(batch))
    assert "stores 1; this upsert would add 4, making 5" in (error.details() or "")
    assert await _stored(stub, "batch") == before
    del batch.requests[-1]
    await stub.BatchUpsertDocuments(batch)
    assert len(await _stored(stub, "batch")) == MAX_DOCUMENTS


async def test_racing_upserts_never_take_a_tenant_past_its_quota(stub: pb_grpc.RetrieverServiceStub) -> None:
    # Into several collections: upserts of one collection already wait for each other on its
    # generation, those of different collections only on the tenant's quota lock.
    collections = [f"race-{i}" for i in range(8)]
    for name in collections:
        await stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(tenant="race", name=name, embedding_model="m", dimension=8)
        )
    await stub.UpsertDocument(_upsert("race", "first", collection=collections[0]))
    calls = [stub.UpsertDocument(_upsert("race", "single", collection=name)) for name in collections]
    calls += [
        stub.BatchUpsertDocuments(
            pb.BatchUpsertDocumentsRequest(
                tenant="race",
                collection=name,
                requests=[_upsert("", "pair-a", collection=""), _upsert("", "pair-b", collection="")],
            )
        )
        for name in collections
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused), refused
    stored = [d for name in collections for d in await _stored(stub, "race", name)]
    assert len(stored) == MAX_DOCUMENTS, stored
    # Three singles, or a pair and a single, filled the room for three.
    assert len(outcomes) - len(refused) in (2, 3)


async def test_a_claimed_document_past_the_quota_fails_for_good_with_the_reason(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub
) -> None:
    await _tenant(stub, "jobs")
    for i in range(MAX_DOCUMENTS):
        await stub.UpsertDocument(_upsert("jobs", f"d{i}"))
    before = await _stored(stub, "jobs")
    job = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(
            tenant="jobs",
            collection=COLLECTION,
            documents=[
                common_pb2.DocumentContent(document_id="late", content=b"late", media_type="text/plain")
            ],
        )
    )
    claims = await queue.ClaimIngestWork(
        queue_pb.ClaimIngestWorkRequest(max_documents=10, lease_seconds=60, max_attempts=3)
    )
    [claimed] = claims.documents
    assert claimed.tenant == "jobs"
    request = _upsert(claimed.tenant, "late")
    request.claim.CopyFrom(claimed.claim)
    error = await _refused(stub.UpsertDocument(request))
    assert await _stored(stub, "jobs") == before
    got = await queue.GetStoredIngestJob(
        queue_pb.GetStoredIngestJobRequest(tenant="jobs", job_id=job.job.job_id)
    )
    assert got.job.state == common_pb2.INGEST_JOB_STATE_FAILED
    assert [(f.document_id, f.reason) for f in got.job.failures] == [("late", error.details())]
    # The worker's own report of the failure, asking for a retry, finds the document settled.
    retry = queue_pb.FailIngestWorkRequest(
        claim=claimed.claim, reason=f"RESOURCE_EXHAUSTED: {error.details()}"
    )
    retry.retry_after.FromSeconds(0)
    assert not (await queue.FailIngestWork(retry)).requeued
    again = await queue.ClaimIngestWork(
        queue_pb.ClaimIngestWorkRequest(max_documents=10, lease_seconds=60, max_attempts=3)
    )
    assert list(again.documents) == []


async def test_a_quota_check_waits_for_the_tenants_check_before_it_to_commit(
    stub: pb_grpc.RetrieverServiceStub, quota_database_url: str
) -> None:
    """The race, step by step on two connections: without the tenant's lock, both upserts would
    count the one stored document and their own, and both would pass a quota of two."""
    await _tenant(stub, "lock")
    await stub.UpsertDocument(_upsert("lock", "stored"))
    quota = TenantQuota(max_documents=2, max_chunks=0)
    first, second = await asyncpg.connect(quota_database_url), await asyncpg.connect(quota_database_url)
    try:
        collection_id = await first.fetchval(
            "SELECT id FROM collections WHERE tenant = 'lock' AND name = $1", COLLECTION
        )
        insert = "INSERT INTO documents (collection_id, document_id, content_hash) VALUES ($1, $2, 'h')"
        one, other = first.transaction(), second.transaction()
        await one.start()
        await other.start()
        await first.execute(insert, collection_id, "first")
        await second.execute(insert, collection_id, "second")
        await check_quota(first, "lock", quota, Growth(1, 0))
        waiting = asyncio.create_task(check_quota(second, "lock", quota, Growth(1, 0)))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await one.commit()
        with pytest.raises(QuotaExceeded, match="stores 2; this upsert would add 1, making 3"):
            await waiting
        await other.rollback()
    finally:
        await first.close()
        await second.close()
    assert [d for d, _, _ in await _stored(stub, "lock")] == ["first", "stored"]
