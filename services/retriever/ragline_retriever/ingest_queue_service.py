"""The `ragline.v1.IngestQueueService` servicer: the durable ingest queue, as thin handlers over `jobs.py`.

It serves in the retriever's process beside RetrieverService, on the same database: a worker's
RetrieverService.UpsertDocument finishes its claimed document in the transaction that stores it.
The queue's gauges are refreshed by the process's readiness probe (`refresh_queue_gauges`).
"""

from __future__ import annotations

from datetime import datetime

import grpc
from prometheus_client import Gauge

from ragline.errors import InvalidArgument, shorten
from ragline.v1 import ingest_queue_service_pb2 as pb
from ragline.v1 import ingest_queue_service_pb2_grpc as pb_grpc
from ragline.validation import check_collection_name, check_tenant, parse_uuid
from ragline_retriever import collection_migrations, collection_store, jobs
from ragline_retriever.database import Database
from ragline_retriever.paging import decode_page_token, listing_scope, next_page_token, page_size

INGEST_QUEUE_DOCUMENTS = Gauge(
    "ragline_ingest_queue_documents",
    "Ingest job documents waiting for a worker (queued) or being processed (running), read every few seconds.",
    ["state"],
)
INGEST_OLDEST_QUEUED_AGE = Gauge(
    "ragline_ingest_oldest_queued_age_seconds",
    "How long the oldest due ingest document has waited for a worker; 0 when none waits.",
)


async def refresh_queue_gauges(database: Database) -> None:
    """Reads the queue's documents by state and the age of the oldest waiting one into the gauges."""
    async with database.connection() as conn:
        queued, running, oldest = await jobs.queue_stats(conn)
    INGEST_QUEUE_DOCUMENTS.labels("queued").set(queued)
    INGEST_QUEUE_DOCUMENTS.labels("running").set(running)
    INGEST_OLDEST_QUEUED_AGE.set(oldest)


class IngestQueueServicer(pb_grpc.IngestQueueServiceServicer):
    """Serves ingest jobs and the leases of their documents from the retriever's database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def CreateStoredIngestJob(
        self, request: pb.CreateStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStoredIngestJobResponse:
        tenant = check_tenant(request.tenant)
        name = check_collection_name(request.collection, "collection")
        async with self._db.connection() as conn:
            await collection_store.collection_id(conn, tenant, name)
            job = await jobs.create_job(conn, tenant, name, request.documents, request.accepting_documents)
        return pb.CreateStoredIngestJobResponse(job=job)

    async def AppendStoredIngestJob(
        self, request: pb.AppendStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendStoredIngestJobResponse:
        tenant = check_tenant(request.tenant)
        job_id = parse_uuid(request.job_id, "job_id")
        async with self._db.connection() as conn:
            job = await jobs.append_documents(conn, tenant, job_id, request.documents, request.last)
        return pb.AppendStoredIngestJobResponse(job=job)

    async def GetStoredIngestJob(
        self, request: pb.GetStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStoredIngestJobResponse:
        tenant = check_tenant(request.tenant)
        job_id = parse_uuid(request.job_id, "job_id")
        async with self._db.connection() as conn:
            return pb.GetStoredIngestJobResponse(job=await jobs.get_job(conn, tenant, job_id))

    async def ListStoredIngestJobs(
        self, request: pb.ListStoredIngestJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStoredIngestJobsResponse:
        tenant = check_tenant(request.tenant)
        if request.collection:
            check_collection_name(request.collection, "collection")
        size = page_size(request.page_size)
        scope = listing_scope(f"ingest-jobs/{request.collection}", tenant)
        after_key = decode_page_token(request.page_token, scope)
        after = None
        if after_key:
            created, _, job_id = after_key.partition(" ")
            try:
                after = (datetime.fromisoformat(created), parse_uuid(job_id, "page_token"))
            except ValueError:
                raise InvalidArgument(
                    "page_token is not a next_page_token of this listing", field="page_token"
                ) from None
        async with self._db.connection() as conn:
            rows = await jobs.list_jobs(conn, tenant, request.collection, after, size + 1)
        return pb.ListStoredIngestJobsResponse(
            jobs=[jobs.job_pb(row) for row in rows[:size]],
            next_page_token=next_page_token(
                scope, rows, size, lambda row: f"{row['created_at'].isoformat()} {row['id']}"
            ),
        )

    async def CancelStoredIngestJob(
        self, request: pb.CancelStoredIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelStoredIngestJobResponse:
        tenant = check_tenant(request.tenant)
        job_id = parse_uuid(request.job_id, "job_id")
        async with self._db.connection() as conn:
            job = await jobs.cancel_job(conn, tenant, job_id, _reason(request.reason))
            # A cancelled migration's target is deleted: the collection stays as it was.
            await collection_migrations.cancelled(conn, job)
            return pb.CancelStoredIngestJobResponse(job=job)

    async def ClaimIngestWork(
        self, request: pb.ClaimIngestWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimIngestWorkResponse:
        # Of every tenant: workers serve them all, and each document carries its job's tenant.
        async with self._db.connection() as conn:
            claimed = await jobs.claim_documents(
                conn, request.max_documents, request.lease_seconds, request.max_attempts
            )
            claimed = await collection_migrations.fill_claimed(conn, claimed)
        return pb.ClaimIngestWorkResponse(documents=claimed)

    async def FailIngestWork(
        self, request: pb.FailIngestWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.FailIngestWorkResponse:
        jobs.validate_claim(request.claim)
        retry_after = (
            request.retry_after.ToTimedelta().total_seconds() if request.HasField("retry_after") else None
        )
        if retry_after is not None and retry_after < 0:
            raise InvalidArgument("retry_after must not be negative", field="retry_after")
        async with self._db.connection() as conn:
            requeued = await jobs.fail_document(conn, request.claim, _reason(request.reason), retry_after)
        return pb.FailIngestWorkResponse(requeued=requeued)

    async def RenewIngestWork(
        self, request: pb.RenewIngestWorkRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewIngestWorkResponse:
        async with self._db.connection() as conn:
            renewed = await jobs.renew_leases(conn, request.claims, request.lease_seconds)
        return pb.RenewIngestWorkResponse(renewed=renewed)


def _reason(text: str) -> str:
    """A failure or cancellation reason as stored: NUL (which PostgreSQL cannot store) spelled out and
    the length bounded. A reason quotes an error, so it is kept rather than refused: refusing would
    leave a failed document claimed until its lease ran out."""
    return shorten(text.replace("\x00", "\\x00"))
