"""The durable ingest queue against a real retriever and PostgreSQL: claims, leases, retries, counters.

The queue is shared by every collection, so each test drains (or cancels) what it enqueues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_retriever_service import TENANT

from ragline.devstack import ServiceProcess
from ragline.v1 import common_pb2
from ragline.v1 import ingest_queue_service_pb2 as queue_pb
from ragline.v1 import ingest_queue_service_pb2_grpc as queue_grpc
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def _documents(count: int, prefix: str = "doc") -> list[common_pb2.DocumentContent]:
    return [
        common_pb2.DocumentContent(
            document_id=f"{prefix}-{i}", content=f"text {i}".encode(), media_type="text/plain"
        )
        for i in range(count)
    ]


async def _claim(
    queue: queue_grpc.IngestQueueServiceStub, count: int = 100, lease: float = 60.0, max_attempts: int = 5
) -> list[queue_pb.ClaimedDocument]:
    reply = await queue.ClaimIngestWork(
        queue_pb.ClaimIngestWorkRequest(max_documents=count, lease_seconds=lease, max_attempts=max_attempts)
    )
    return list(reply.documents)


async def _store(
    stub: pb_grpc.RetrieverServiceStub,
    claimed: queue_pb.ClaimedDocument,
    claim: queue_pb.IngestClaim | None = None,
) -> pb.UpsertDocumentResponse:
    text = claimed.document.content.decode()
    reply: pb.UpsertDocumentResponse = await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            # As a worker does: the claimed document's tenant, which is its job's.
            tenant=claimed.tenant,
            collection=claimed.collection,
            document_id=claimed.document.document_id,
            chunks=[
                common_pb2.ChunkInput(text=text, token_count=2, embedding=[1.0] * 7 + [float(len(text))])
            ],
            claim=claim or claimed.claim,
        )
    )
    return reply


async def _job(queue: queue_grpc.IngestQueueServiceStub, job_id: str) -> common_pb2.IngestJob:
    reply = await queue.GetStoredIngestJob(queue_pb.GetStoredIngestJobRequest(tenant=TENANT, job_id=job_id))
    job: common_pb2.IngestJob = reply.job
    return job


async def test_concurrent_claims_never_share_a_document_and_counters_add_up(
    stub: pb_grpc.RetrieverServiceStub,
    queue: queue_grpc.IngestQueueServiceStub,
    new_collection: Callable[..., Awaitable[str]],
) -> None:
    collection = await new_collection()
    created = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, documents=_documents(60))
    )
    assert created.job.state == common_pb2.INGEST_JOB_STATE_PENDING and created.job.total_documents == 60

    claimed: list[queue_pb.ClaimedDocument] = []
    while batch := [
        d for group in await asyncio.gather(*(_claim(queue, 7) for _ in range(6))) for d in group
    ]:
        claimed.extend(batch)

    assert sorted(d.claim.ordinal for d in claimed) == list(range(60))
    assert {d.collection for d in claimed} == {collection} and {d.attempt for d in claimed} == {1}
    assert (await _job(queue, created.job.job_id)).state == common_pb2.INGEST_JOB_STATE_RUNNING
    for document in claimed[:50]:
        await _store(stub, document)
    for document in claimed[50:]:
        await queue.FailIngestWork(
            queue_pb.FailIngestWorkRequest(claim=document.claim, reason="unreadable: test")
        )

    job = await _job(queue, created.job.job_id)
    assert job.state == common_pb2.INGEST_JOB_STATE_FAILED
    assert (job.done_documents, job.skipped_documents, job.failed_documents, job.written_chunks) == (
        50,
        0,
        10,
        50,
    )
    assert sorted(f.document_id for f in job.failures) == sorted(d.document.document_id for d in claimed[50:])
    assert {f.reason for f in job.failures} == {"unreadable: test"}
    assert job.end_time.seconds > 0 and job.documents_per_second > 0


async def test_a_lapsed_lease_is_taken_over_and_the_old_claim_counts_nothing(
    stub: pb_grpc.RetrieverServiceStub,
    queue: queue_grpc.IngestQueueServiceStub,
    new_collection: Callable[..., Awaitable[str]],
) -> None:
    collection = await new_collection()
    created = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, documents=_documents(1))
    )
    [first] = await _claim(queue, lease=0.2)
    assert await _claim(queue) == []  # leased: nobody else gets it
    await asyncio.sleep(0.4)

    [second] = await _claim(queue)

    assert second.claim.ordinal == first.claim.ordinal and second.attempt == 2
    assert second.claim.claim_token != first.claim.claim_token
    await _store(stub, first)  # the presumed-dead worker finishes after all: stored, not counted
    assert (await _job(queue, created.job.job_id)).done_documents == 0
    await _store(stub, second)
    job = await _job(queue, created.job.job_id)
    assert job.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED
    assert (job.done_documents, job.skipped_documents) == (0, 1)  # the second upsert found it stored


async def test_a_document_whose_worker_keeps_dying_is_failed(
    queue: queue_grpc.IngestQueueServiceStub, new_collection: Callable[..., Awaitable[str]]
) -> None:
    collection = await new_collection()
    created = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, documents=_documents(1))
    )
    for _ in range(2):
        assert len(await _claim(queue, lease=0.1, max_attempts=2)) == 1
        await asyncio.sleep(0.3)

    assert await _claim(queue, max_attempts=2) == []

    job = await _job(queue, created.job.job_id)
    assert job.state == common_pb2.INGEST_JOB_STATE_FAILED
    assert job.failures[0].reason == "its worker stopped before finishing it 2 times"


async def test_a_retried_document_comes_back_after_its_delay(
    queue: queue_grpc.IngestQueueServiceStub, new_collection: Callable[..., Awaitable[str]]
) -> None:
    collection = await new_collection()
    created = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, documents=_documents(1))
    )
    [claimed] = await _claim(queue)
    reply = await queue.FailIngestWork(
        queue_pb.FailIngestWorkRequest(
            claim=claimed.claim,
            reason="UNAVAILABLE: embedder down",
            retry_after=duration_pb2.Duration(nanos=500_000_000),
        )
    )
    assert reply.requeued
    assert await _claim(queue) == []
    await asyncio.sleep(0.7)
    [again] = await _claim(queue)
    assert again.attempt == 2
    await queue.FailIngestWork(
        queue_pb.FailIngestWorkRequest(claim=again.claim, reason="UNAVAILABLE: embedder down")
    )
    job = await _job(queue, created.job.job_id)
    assert [(f.document_id, f.reason, f.attempts) for f in job.failures] == [
        ("doc-0", "UNAVAILABLE: embedder down", 2)
    ]


async def test_an_upload_job_finishes_only_once_closed(
    stub: pb_grpc.RetrieverServiceStub,
    queue: queue_grpc.IngestQueueServiceStub,
    new_collection: Callable[..., Awaitable[str]],
) -> None:
    collection = await new_collection()
    created = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, accepting_documents=True)
    )
    job_id = created.job.job_id
    await queue.AppendStoredIngestJob(
        queue_pb.AppendStoredIngestJobRequest(tenant=TENANT, job_id=job_id, documents=_documents(2, "a"))
    )
    for claimed in await _claim(queue):
        await _store(stub, claimed)
    assert (await _job(queue, job_id)).state == common_pb2.INGEST_JOB_STATE_RUNNING  # more may come

    closed = await queue.AppendStoredIngestJob(
        queue_pb.AppendStoredIngestJobRequest(
            tenant=TENANT, job_id=job_id, documents=_documents(1, "b"), last=True
        )
    )
    assert closed.job.total_documents == 3 and not closed.job.accepting_documents
    for claimed in await _claim(queue):
        assert claimed.claim.ordinal == 2
        await _store(stub, claimed)
    assert (await _job(queue, job_id)).state == common_pb2.INGEST_JOB_STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await queue.AppendStoredIngestJob(
            queue_pb.AppendStoredIngestJobRequest(tenant=TENANT, job_id=job_id, documents=_documents(1, "c"))
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancelling_drops_queued_and_leased_documents(
    stub: pb_grpc.RetrieverServiceStub,
    queue: queue_grpc.IngestQueueServiceStub,
    new_collection: Callable[..., Awaitable[str]],
) -> None:
    collection = await new_collection()
    created = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, documents=_documents(5))
    )
    [leased] = await _claim(queue, 1)

    reply = await queue.CancelStoredIngestJob(
        # A reason quoting a NUL, which PostgreSQL cannot store, is kept with the NUL spelled out.
        queue_pb.CancelStoredIngestJobRequest(tenant=TENANT, job_id=created.job.job_id, reason="oops \x00")
    )

    assert reply.job.state == common_pb2.INGEST_JOB_STATE_CANCELLED
    assert (reply.job.cancelled_documents, reply.job.status_message) == (5, "oops \\x00")
    assert await _claim(queue) == []
    await _store(stub, leased)  # its worker finishes: the document is stored, the job unchanged
    assert (await _job(queue, created.job.job_id)).cancelled_documents == 5


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (
            queue_pb.GetStoredIngestJobRequest(tenant=TENANT, job_id="12"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a job id",
        ),
        (
            queue_pb.GetStoredIngestJobRequest(tenant=TENANT, job_id="00000000-0000-0000-0000-000000000000"),
            grpc.StatusCode.NOT_FOUND,
            "does not exist",
        ),
        (
            queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection="no-such-collection"),
            grpc.StatusCode.NOT_FOUND,
            "collection",
        ),
        (
            queue_pb.ClaimIngestWorkRequest(max_documents=0, lease_seconds=1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_documents",
        ),
        (
            queue_pb.FailIngestWorkRequest(
                claim=queue_pb.IngestClaim(job_id="x", claim_token="y"), reason="r"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "claim.job_id",
        ),
    ],
)
async def test_bad_job_requests_are_refused_with_the_field(
    queue: queue_grpc.IngestQueueServiceStub, request_: object, code: grpc.StatusCode, words: str
) -> None:
    method = {
        queue_pb.GetStoredIngestJobRequest: queue.GetStoredIngestJob,
        queue_pb.CreateStoredIngestJobRequest: queue.CreateStoredIngestJob,
        queue_pb.ClaimIngestWorkRequest: queue.ClaimIngestWork,
        queue_pb.FailIngestWorkRequest: queue.FailIngestWork,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await method(request_)
    assert error.value.code() == code
    assert words in (error.value.details() or "")


async def test_a_renewed_lease_is_not_taken_over_and_a_lost_one_is_not_renewed(
    stub: pb_grpc.RetrieverServiceStub,
    queue: queue_grpc.IngestQueueServiceStub,
    new_collection: Callable[..., Awaitable[str]],
) -> None:
    collection = await new_collection()
    await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, documents=_documents(2))
    )
    held, lost = await _claim(queue, lease=0.3)

    renewed = await queue.RenewIngestWork(
        queue_pb.RenewIngestWorkRequest(claims=[held.claim], lease_seconds=60)
    )
    await asyncio.sleep(0.5)

    assert list(renewed.renewed) == [held.claim]
    [taken] = await _claim(queue)
    assert taken.claim.ordinal == lost.claim.ordinal
    late = await queue.RenewIngestWork(queue_pb.RenewIngestWorkRequest(claims=[lost.claim], lease_seconds=60))
    assert list(late.renewed) == []
    await _store(stub, held)
    await _store(stub, taken)


def test_the_queue_is_its_own_service_beside_the_search_api_with_health_and_reflection(
    retriever: ServiceProcess,
) -> None:
    services = ("ragline.v1.RetrieverService", "ragline.v1.IngestQueueService")
    with grpc.insecure_channel(retriever.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in services:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        listed = {s.name for reply in replies for s in reply.list_services_response.service}
    assert set(services) <= listed
    # The search API no longer carries the queue's RPCs.
    assert "ClaimIngestWork" not in pb.DESCRIPTOR.services_by_name["RetrieverService"].methods_by_name


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (common_pb2.DocumentContent(document_id="\x00", content=b"t"), "documents[1].document_id"),
        (
            common_pb2.DocumentContent(
                document_id="d",
                content=b"t",
                metadata=struct_pb2.Struct(
                    fields={
                        "k": struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value()]))
                    }
                ),
            ),
            "documents[1].metadata.k[0]",
        ),
        (
            common_pb2.DocumentContent(
                document_id="d",
                content=b"t",
                metadata=struct_pb2.Struct(fields={"score": struct_pb2.Value(number_value=float("nan"))}),
            ),
            "documents[1].metadata.score",
        ),
    ],
)
async def test_job_documents_a_database_cannot_store_are_refused_and_nothing_is_recorded(
    queue: queue_grpc.IngestQueueServiceStub,
    new_collection: Callable[..., Awaitable[str]],
    document: common_pb2.DocumentContent,
    field: str,
) -> None:
    collection = await new_collection()
    created = await queue.CreateStoredIngestJob(
        queue_pb.CreateStoredIngestJobRequest(tenant=TENANT, collection=collection, accepting_documents=True)
    )
    for call in (
        queue.CreateStoredIngestJob(
            queue_pb.CreateStoredIngestJobRequest(
                tenant=TENANT, collection=collection, documents=[*_documents(1), document]
            )
        ),
        queue.AppendStoredIngestJob(
            queue_pb.AppendStoredIngestJobRequest(
                tenant=TENANT, job_id=created.job.job_id, documents=[*_documents(1), document]
            )
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (error.value.details() or "")
    assert (await _job(queue, created.job.job_id)).total_documents == 0
