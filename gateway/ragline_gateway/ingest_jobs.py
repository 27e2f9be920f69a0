"""The ingest job API: documents are recorded durably through the retriever, then workers ingest them.

A request is checked here (ids, media types, sizes, repeats) and its documents recorded in
one retriever transaction per batch, so the caller gets the job back as soon as nothing can
be lost any more; the work itself happens in `ingest_worker`, in whichever replica claims it.
Every call names the caller's tenant (from its credential) to the ingest queue, which finds only
that tenant's jobs: another tenant's job id is NOT_FOUND, and its page token is refused like one
never issued.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from ragline.channels import downstream_timeout
from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2, gateway_service_pb2, ingest_queue_service_pb2
from ragline.validation import check_collection_name, parse_uuid, quote
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.documents import check_request, job_documents
from ragline_gateway.ingest import Ingester
from ragline_gateway.ingest_worker import IngestWorkers

# An upload is recorded in batches of at most this many documents or bytes.
UPLOAD_BATCH_DOCUMENTS = 256
UPLOAD_BATCH_BYTES = 8 * 1024 * 1024


class _Batch:
    """Documents checked and waiting to be recorded, with the ids seen so far in the request."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.documents: list[common_pb2.DocumentContent] = []
        self.size = 0
        self.seen: set[str] = set()

    def add(self, index: int, document: common_pb2.DocumentContent) -> None:
        for recorded in job_documents(index, document, self.max_bytes):
            if recorded.document_id in self.seen:
                raise InvalidArgument(
                    f"document {quote(recorded.document_id)} appears twice in one job",
                    field=f"documents[{index}]",
                )
            self.seen.add(recorded.document_id)
            self.documents.append(recorded)
            self.size += len(recorded.content)

    def full(self) -> bool:
        return len(self.documents) >= UPLOAD_BATCH_DOCUMENTS or self.size >= UPLOAD_BATCH_BYTES

    def take(self) -> list[common_pb2.DocumentContent]:
        documents, self.documents, self.size = self.documents, [], 0
        return documents


class IngestJobs:
    """Creates, uploads into, reads, lists and cancels ingest jobs."""

    def __init__(
        self, config: GatewayConfig, deps: Dependencies, ingester: Ingester, workers: IngestWorkers
    ) -> None:
        self.config = config
        self.deps = deps
        self.ingester = ingester
        self.workers = workers

    async def _queue(self, rpc: Any, request: Message, context: grpc.aio.ServicerContext) -> Any:
        """The ingest queue's reply to `request`, within the caller's deadline; failures name the retriever."""
        return await call(
            "retriever",
            rpc(request, timeout=downstream_timeout(context, self.config.retrieve_timeout_seconds)),
        )

    async def create(
        self,
        tenant: str,
        request: gateway_service_pb2.CreateIngestJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.CreateIngestJobResponse:
        """Records every document of the request in one job of the tenant, or none if the request is wrong."""
        if not request.documents:
            raise InvalidArgument("no documents given; send at least one", field="documents")
        check_request(request.documents, None, self.config.max_request_bytes)
        collection = check_collection_name(request.collection or self.config.default_collection, "collection")
        batch = _Batch(self.config.max_document_bytes)
        for index, document in enumerate(request.documents):
            batch.add(index, document)
        await self.ingester.ensure_collection(tenant, collection, context)
        reply = await self._queue(
            self.deps.ingest_queue.CreateStoredIngestJob,
            ingest_queue_service_pb2.CreateStoredIngestJobRequest(
                tenant=tenant, collection=collection, documents=batch.take()
            ),
            context,
        )
        self.workers.wake()
        return gateway_service_pb2.CreateIngestJobResponse(job=reply.job)

    async def upload(
        self,
        tenant: str,
        requests: AsyncIterator[gateway_service_pb2.UploadIngestDocumentsRequest],
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.UploadIngestDocumentsResponse:
        """Records streamed documents in a job of the tenant, in batches as they arrive; workers start
        on the first batch at once."""
        batch = _Batch(self.config.max_document_bytes)
        job_id = ""
        index = 0
        try:
            async for message in requests:
                if not job_id:
                    collection = check_collection_name(
                        message.collection or self.config.default_collection, "collection"
                    )
                    await self.ingester.ensure_collection(tenant, collection, context)
                    reply = await self._queue(
                        self.deps.ingest_queue.CreateStoredIngestJob,
                        ingest_queue_service_pb2.CreateStoredIngestJobRequest(
                            tenant=tenant, collection=collection, accepting_documents=True
                        ),
                        context,
                    )
                    job_id = reply.job.job_id
                if not message.HasField("document"):
                    raise InvalidArgument(f"message {index} of the stream has no document", field="document")
                batch.add(index, message.document)
                index += 1
                if batch.full():
                    await self._append(tenant, job_id, batch.take(), False, context)
            if not job_id:
                raise InvalidArgument(
                    "the upload stream held no documents; send at least one", field="document"
                )
            job = await self._append(tenant, job_id, batch.take(), True, context)
        except BaseException as exc:
            if job_id:
                # What was recorded is not what the client meant to send: drop it, and say why.
                reason = getattr(exc, "message", None) or type(exc).__name__
                await asyncio.shield(
                    self._abandon(tenant, job_id, f"the upload stopped before it finished: {reason}")
                )
            raise
        return gateway_service_pb2.UploadIngestDocumentsResponse(job=job)

    async def _append(
        self,
        tenant: str,
        job_id: str,
        documents: Sequence[common_pb2.DocumentContent],
        last: bool,
        context: grpc.aio.ServicerContext,
    ) -> common_pb2.IngestJob:
        reply = await self._queue(
            self.deps.ingest_queue.AppendStoredIngestJob,
            ingest_queue_service_pb2.AppendStoredIngestJobRequest(
                tenant=tenant, job_id=job_id, documents=documents, last=last
            ),
            context,
        )
        self.workers.wake()
        job: common_pb2.IngestJob = reply.job
        return job

    async def _abandon(self, tenant: str, job_id: str, reason: str) -> None:
        await self.deps.ingest_queue.CancelStoredIngestJob(
            ingest_queue_service_pb2.CancelStoredIngestJobRequest(
                tenant=tenant, job_id=job_id, reason=reason
            ),
            timeout=self.config.retrieve_timeout_seconds,
        )

    async def get(
        self,
        tenant: str,
        request: gateway_service_pb2.GetIngestJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.GetIngestJobResponse:
        """The tenant's job with its failures."""
        parse_uuid(request.job_id, "job_id")
        reply = await self._queue(
            self.deps.ingest_queue.GetStoredIngestJob,
            ingest_queue_service_pb2.GetStoredIngestJobRequest(tenant=tenant, job_id=request.job_id),
            context,
        )
        return gateway_service_pb2.GetIngestJobResponse(job=reply.job)

    async def list(
        self,
        tenant: str,
        request: gateway_service_pb2.ListIngestJobsRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.ListIngestJobsResponse:
        """A page of the tenant's jobs, newest first."""
        if request.collection:
            check_collection_name(request.collection, "collection")
        reply = await self._queue(
            self.deps.ingest_queue.ListStoredIngestJobs,
            ingest_queue_service_pb2.ListStoredIngestJobsRequest(
                tenant=tenant,
                collection=request.collection,
                page_size=request.page_size,
                page_token=request.page_token,
            ),
            context,
        )
        return gateway_service_pb2.ListIngestJobsResponse(
            jobs=reply.jobs, next_page_token=reply.next_page_token
        )

    async def cancel(
        self,
        tenant: str,
        request: gateway_service_pb2.CancelIngestJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.CancelIngestJobResponse:
        """Cancels the tenant's job; documents already stored stay."""
        parse_uuid(request.job_id, "job_id")
        reply = await self._queue(
            self.deps.ingest_queue.CancelStoredIngestJob,
            ingest_queue_service_pb2.CancelStoredIngestJobRequest(
                tenant=tenant, job_id=request.job_id, reason="cancelled by request"
            ),
            context,
        )
        return gateway_service_pb2.CancelIngestJobResponse(job=reply.job)
