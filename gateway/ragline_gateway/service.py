"""The gateway's public API, ragline.v1.GatewayService: thin handlers over the ingester and the query pipeline.

Each handler reads the caller's tenant once, from the credential the authentication interceptor
bound (`principal.current()`), and passes it explicitly down to every retriever and ingest queue
request and every cache key: no request field names a tenant, so a caller reaches only its own
tenant's collections, documents, jobs and cached results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ragline.channels import downstream_timeout
from ragline.v1 import conversation_pb2, gateway_service_pb2, gateway_service_pb2_grpc, retriever_service_pb2
from ragline.validation import check_collection_name, check_document_id
from ragline_gateway import principal
from ragline_gateway.cache import QueryCache
from ragline_gateway.config import GatewayConfig
from ragline_gateway.conversations import Conversations
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.ingest import Ingester
from ragline_gateway.ingest_jobs import IngestJobs
from ragline_gateway.ingest_worker import IngestWorkers
from ragline_gateway.pipeline import QueryPipeline
from ragline_gateway.query import MAX_ASK_TOP_K, MAX_SEARCH_TOP_K, Query
from ragline_gateway.timings import Timings


class GatewayServicer(gateway_service_pb2_grpc.GatewayServiceServicer):
    """Implements ragline.v1.GatewayService on top of the embedder, retriever, generator and Redis."""

    def __init__(self, config: GatewayConfig, deps: Dependencies) -> None:
        self.config = config
        self.deps = deps
        self.cache = QueryCache(
            None,
            embedding_ttl=config.cache_embedding_ttl_seconds,
            retrieval_ttl=config.cache_retrieval_ttl_seconds,
            answer_ttl=config.cache_answer_ttl_seconds,
            semantic_distance=config.semantic_cache_distance,
            semantic_entries=config.semantic_cache_entries,
        )
        self.ingester = Ingester(config, deps)
        self.workers = IngestWorkers(config, deps, self.ingester)
        self.jobs = IngestJobs(config, deps, self.ingester, self.workers)
        self.pipeline = QueryPipeline(config, deps, self.cache)
        self.conversations = Conversations(config, deps, self.pipeline)

    async def start(self) -> None:
        """Connects to the dependencies, hands the Redis client to the cache, and starts the ingest workers."""
        await self.deps.start()
        self.cache.client = self.deps.redis
        self.workers.start()

    async def check_ready(self) -> None:
        """Probes the dependencies; the cache is used again as soon as Redis answers."""
        try:
            await self.deps.check()
        finally:
            self.cache.available = self.deps.redis_up

    async def stop(self) -> None:
        """Stops the ingest workers, then closes the channels and Redis."""
        await self.workers.stop()
        await self.deps.close()

    async def IngestDocuments(
        self, request: gateway_service_pb2.IngestDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.IngestDocumentsResponse:
        return await self.ingester.ingest(principal.current().tenant, request, context)

    async def Search(
        self, request: gateway_service_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.SearchResponse:
        tenant = principal.current().tenant
        timings = Timings()
        query = Query.parse(request.query, self.config, MAX_SEARCH_TOP_K, tenant)
        retrieval = await self.pipeline.search(query, timings, context)
        return gateway_service_pb2.SearchResponse(
            hits=retrieval.hits,
            stage_timings=timings.stages,
            cache_layer=retrieval.cache_layer,
            rerank_status=retrieval.rerank_status,
            generation=retrieval.generation,
            duration_seconds=timings.elapsed(),
        )

    async def Ask(
        self, request: gateway_service_pb2.AskRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.AskResponse:
        tenant = principal.current().tenant
        query = Query.parse(request.query, self.config, MAX_ASK_TOP_K, tenant)
        events = self.conversations.ask_events(query, request.conversation_id, request.options, context)
        async for event in events:
            if event.HasField("final"):
                return event.final
        raise AssertionError("the pipeline always ends with a final answer")

    async def AskStream(
        self, request: gateway_service_pb2.AskStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_service_pb2.AskStreamResponse]:
        tenant = principal.current().tenant
        query = Query.parse(request.query, self.config, MAX_ASK_TOP_K, tenant)
        async for event in self.conversations.ask_events(
            query, request.conversation_id, request.options, context
        ):
            yield event

    def _collection(self, name: str) -> str:
        """The collection a request names, or the configured default; INVALID_ARGUMENT if not a valid name."""
        return check_collection_name(name or self.config.default_collection, "collection")

    async def GetDocument(
        self, request: gateway_service_pb2.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.GetDocumentResponse:
        tenant = principal.current().tenant
        forwarded = retriever_service_pb2.GetStoredDocumentRequest(
            tenant=tenant,
            collection=self._collection(request.collection),
            document_id=check_document_id(request.document_id, "document_id"),
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call("retriever", self.deps.retriever.GetStoredDocument(forwarded, timeout=timeout))
        return gateway_service_pb2.GetDocumentResponse(document=reply.document)

    async def ListDocuments(
        self, request: gateway_service_pb2.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.ListDocumentsResponse:
        tenant = principal.current().tenant
        forwarded = retriever_service_pb2.ListStoredDocumentsRequest(
            tenant=tenant,
            collection=self._collection(request.collection),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call("retriever", self.deps.retriever.ListStoredDocuments(forwarded, timeout=timeout))
        return gateway_service_pb2.ListDocumentsResponse(
            documents=reply.documents, next_page_token=reply.next_page_token
        )

    async def DeleteDocument(
        self, request: gateway_service_pb2.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.DeleteDocumentResponse:
        tenant = principal.current().tenant
        forwarded = retriever_service_pb2.DeleteStoredDocumentRequest(
            tenant=tenant,
            collection=self._collection(request.collection),
            document_id=check_document_id(request.document_id, "document_id"),
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call("retriever", self.deps.retriever.DeleteStoredDocument(forwarded, timeout=timeout))
        return gateway_service_pb2.DeleteDocumentResponse(deleted_chunks=reply.deleted_chunks)

    async def CreateIngestJob(
        self, request: gateway_service_pb2.CreateIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.CreateIngestJobResponse:
        return await self.jobs.create(principal.current().tenant, request, context)

    async def UploadIngestDocuments(
        self,
        request_iterator: AsyncIterator[gateway_service_pb2.UploadIngestDocumentsRequest],
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.UploadIngestDocumentsResponse:
        return await self.jobs.upload(principal.current().tenant, request_iterator, context)

    async def GetIngestJob(
        self, request: gateway_service_pb2.GetIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.GetIngestJobResponse:
        return await self.jobs.get(principal.current().tenant, request, context)

    async def ListIngestJobs(
        self, request: gateway_service_pb2.ListIngestJobsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.ListIngestJobsResponse:
        return await self.jobs.list(principal.current().tenant, request, context)

    async def CancelIngestJob(
        self, request: gateway_service_pb2.CancelIngestJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.CancelIngestJobResponse:
        return await self.jobs.cancel(principal.current().tenant, request, context)

    async def ListConversations(
        self, request: conversation_pb2.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> conversation_pb2.ListConversationsResponse:
        return await self.conversations.list(principal.current().tenant, request, context)

    async def GetConversation(
        self, request: conversation_pb2.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> conversation_pb2.GetConversationResponse:
        return await self.conversations.get(principal.current().tenant, request, context)

    async def DeleteConversation(
        self, request: conversation_pb2.DeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> conversation_pb2.DeleteConversationResponse:
        return await self.conversations.delete(principal.current().tenant, request, context)
