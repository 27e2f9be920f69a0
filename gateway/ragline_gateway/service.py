"""The gateway's public API: ingest (chunk → embed → store) and ask (embed → search → generate).

The gateway holds no data of its own; it validates requests, orchestrates the other
services with deadlines derived from the caller's, and times each stage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
from prometheus_client import Histogram

from ragline.channels import downstream_timeout
from ragline.errors import FailedPrecondition, InvalidArgument, from_rpc_error
from ragline.metrics import LATENCY_BUCKETS
from ragline.v1 import (
    common_pb2,
    embedder_service_pb2,
    gateway_service_pb2,
    gateway_service_pb2_grpc,
    generator_service_pb2,
    retriever_service_pb2,
)
from ragline_gateway.chunking import chunk_text
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies
from ragline_gateway.documents import content_hash, decode_document

T = TypeVar("T")

STAGE_DURATION = Histogram(
    "ragline_gateway_stage_duration_seconds",
    "Time one pipeline stage took, by stage.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
MAX_TOP_K = 50


class _Timings:
    """Collects per-stage durations for the response and the stage histogram."""

    def __init__(self) -> None:
        self.stages: list[common_pb2.StageTiming] = []

    @asynccontextmanager
    async def stage(self, name: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            STAGE_DURATION.labels(name).observe(elapsed)
            self.stages.append(common_pb2.StageTiming(stage=name, duration_seconds=elapsed))


async def _call(dependency: str, call: Awaitable[T]) -> T:
    """Awaits a downstream call, turning its failure into an error that names the dependency."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(dependency, exc) from None


class GatewayServicer(gateway_service_pb2_grpc.GatewayServiceServicer):
    """Implements ragline.v1.GatewayService on top of the embedder, retriever and generator."""

    def __init__(self, config: GatewayConfig, deps: Dependencies) -> None:
        self.config = config
        self.deps = deps

    def _collection(self, name: str) -> str:
        return name or self.config.default_collection

    async def _embed(
        self,
        texts: Sequence[str],
        input_type: embedder_service_pb2.InputType,
        context: grpc.aio.ServicerContext,
    ) -> list[list[float]]:
        vectors: list[list[float]] = []
        size = self.config.embed_batch_size
        for start in range(0, len(texts), size):
            request = embedder_service_pb2.EmbedRequest(
                texts=texts[start : start + size], input_type=input_type
            )
            timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
            reply = await _call("embedder", self.deps.embedder.Embed(request, timeout=timeout))
            vectors.extend(list(e.values) for e in reply.embeddings)
        return vectors

    async def _ensure_collection(self, name: str, context: grpc.aio.ServicerContext) -> None:
        """Creates the collection for the embedder's model on first ingest; checks the model matches after."""
        timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
        info = await _call(
            "embedder",
            self.deps.embedder.GetModelInfo(embedder_service_pb2.GetModelInfoRequest(), timeout=timeout),
        )
        try:
            reply = await self.deps.retriever.GetCollection(
                retriever_service_pb2.GetCollectionRequest(name=name),
                timeout=downstream_timeout(context, self.config.retrieve_timeout_seconds),
            )
            collection = reply.collection
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise from_rpc_error("retriever", exc) from None
            request = retriever_service_pb2.CreateCollectionRequest(
                name=name, embedding_model=info.model, dimension=info.dimension
            )
            try:
                created = await self.deps.retriever.CreateCollection(
                    request, timeout=downstream_timeout(context, self.config.retrieve_timeout_seconds)
                )
                collection = created.collection
            except grpc.aio.AioRpcError as create_exc:
                # Another ingest created it between our get and create: that one is as good.
                if create_exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise from_rpc_error("retriever", create_exc) from None
                return await self._ensure_collection(name, context)
        if (collection.embedding_model, collection.dimension) != (info.model, info.dimension):
            raise FailedPrecondition(
                f"collection {name!r} holds vectors of {collection.embedding_model} ({collection.dimension} dims) "
                f"but the embedder serves {info.model} ({info.dimension} dims); ingest into a new collection"
            )
        return None

    async def IngestDocuments(
        self, request: gateway_service_pb2.IngestDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.IngestDocumentsResponse:
        if not request.documents:
            raise InvalidArgument("no documents given; send at least one", field="documents")
        seen: set[str] = set()
        texts = []
        for index, document in enumerate(request.documents):
            texts.append(decode_document(index, document, self.config.max_document_bytes))
            if document.document_id in seen:
                raise InvalidArgument(
                    f"document {document.document_id!r} appears twice in one request",
                    field=f"documents[{index}]",
                )
            seen.add(document.document_id)
        collection = self._collection(request.collection)
        await self._ensure_collection(collection, context)
        chunked = [chunk_text(t, self.config.chunk_tokens, self.config.chunk_overlap_tokens) for t in texts]
        vectors = await self._embed(
            [c.text for chunks in chunked for c in chunks], embedder_service_pb2.INPUT_TYPE_PASSAGE, context
        )
        response = gateway_service_pb2.IngestDocumentsResponse()
        offset = 0
        for document, text, chunks in zip(request.documents, texts, chunked, strict=True):
            upsert = retriever_service_pb2.UpsertDocumentRequest(
                collection=collection,
                document_id=document.document_id,
                metadata=document.metadata,
                content_hash=content_hash(text),
                chunks=[
                    retriever_service_pb2.ChunkInput(text=c.text, token_count=c.token_count, embedding=vector)
                    for c, vector in zip(chunks, vectors[offset : offset + len(chunks)], strict=True)
                ],
            )
            offset += len(chunks)
            timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
            reply = await _call("retriever", self.deps.retriever.UpsertDocument(upsert, timeout=timeout))
            response.results.append(
                gateway_service_pb2.IngestResult(
                    document_id=document.document_id,
                    chunk_count=len(chunks),
                    unchanged_chunks=reply.unchanged_chunks,
                    inserted_chunks=reply.inserted_chunks,
                    updated_chunks=reply.updated_chunks,
                    deleted_chunks=reply.deleted_chunks,
                )
            )
            response.generation = reply.generation
        return response

    async def _search(
        self,
        collection: str,
        query: str,
        top_k: int,
        mode: common_pb2.SearchMode,
        timings: _Timings,
        context: grpc.aio.ServicerContext,
    ) -> list[common_pb2.SearchHit]:
        if not query.strip():
            raise InvalidArgument("the question is empty; ask something", field="question")
        if not 0 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k is {top_k}; it must be between 1 and {MAX_TOP_K}", field="top_k")
        async with timings.stage("embed"):
            (vector,) = await self._embed([query], embedder_service_pb2.INPUT_TYPE_QUERY, context)
        async with timings.stage("retrieve"):
            request = retriever_service_pb2.SearchChunksRequest(
                collection=self._collection(collection),
                query_text=query,
                query_embedding=vector,
                top_k=top_k or self.config.top_k,
                mode=mode,
            )
            timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
            reply = await _call("retriever", self.deps.retriever.SearchChunks(request, timeout=timeout))
        return list(reply.hits)

    async def Search(
        self, request: gateway_service_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.SearchResponse:
        timings = _Timings()
        hits = await self._search(
            request.collection, request.query, request.top_k, request.mode, timings, context
        )
        return gateway_service_pb2.SearchResponse(hits=hits, stage_timings=timings.stages)

    async def Ask(
        self, request: gateway_service_pb2.AskRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.AskResponse:
        timings = _Timings()
        hits = await self._search(
            request.collection, request.question, request.top_k, request.mode, timings, context
        )
        async with timings.stage("generate"):
            generate = generator_service_pb2.GenerateRequest(
                question=request.question,
                passages=[
                    common_pb2.Passage(
                        document_id=h.document_id, chunk_id=h.chunk_id, text=h.text, score=h.score
                    )
                    for h in hits
                ],
                options=request.options,
            )
            timeout = downstream_timeout(context, self.config.generate_timeout_seconds)
            answer = await _call("generator", self.deps.generator.Generate(generate, timeout=timeout))
        return gateway_service_pb2.AskResponse(
            answer=answer.text,
            citations=answer.citations,
            usage=answer.usage,
            finish_reason=answer.finish_reason,
            model=answer.model,
            stage_timings=timings.stages,
        )

    async def GetDocument(
        self, request: gateway_service_pb2.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.GetDocumentResponse:
        forwarded = retriever_service_pb2.GetStoredDocumentRequest(
            collection=self._collection(request.collection), document_id=request.document_id
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await _call("retriever", self.deps.retriever.GetStoredDocument(forwarded, timeout=timeout))
        return gateway_service_pb2.GetDocumentResponse(document=reply.document)

    async def ListDocuments(
        self, request: gateway_service_pb2.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.ListDocumentsResponse:
        forwarded = retriever_service_pb2.ListStoredDocumentsRequest(
            collection=self._collection(request.collection),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await _call("retriever", self.deps.retriever.ListStoredDocuments(forwarded, timeout=timeout))
        return gateway_service_pb2.ListDocumentsResponse(
            documents=reply.documents, next_page_token=reply.next_page_token
        )

    async def DeleteDocument(
        self, request: gateway_service_pb2.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.DeleteDocumentResponse:
        forwarded = retriever_service_pb2.DeleteStoredDocumentRequest(
            collection=self._collection(request.collection), document_id=request.document_id
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await _call("retriever", self.deps.retriever.DeleteStoredDocument(forwarded, timeout=timeout))
        return gateway_service_pb2.DeleteDocumentResponse(deleted_chunks=reply.deleted_chunks)
