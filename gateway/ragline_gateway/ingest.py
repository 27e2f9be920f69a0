"""Ingestion's steps (chunk, embed what is new, store), and the synchronous IngestDocuments on top of them.

The ingest job workers (`ingest_worker`) run the same steps on documents claimed from the
durable queue. IngestDocuments is all or nothing: every document of a request is decoded, checked
and embedded before anything is written, and then all are stored in one retriever transaction
(BatchUpsertDocuments), so a bad one fails the request with INVALID_ARGUMENT naming it and leaves
what is stored untouched.

Every step takes the tenant whose collection it writes explicitly: the caller's, from its
credential, for IngestDocuments and job requests; the job's, as the claim carries it, for workers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ragline import tracing
from ragline.channels import downstream_timeout
from ragline.errors import InvalidArgument, ServiceError, from_rpc_error
from ragline.v1 import (
    common_pb2,
    embedder_service_pb2,
    gateway_service_pb2,
    ingest_queue_service_pb2,
    retriever_service_pb2,
)
from ragline.validation import check_collection_name, quote
from ragline_gateway.chunking import Chunk, chunk_sections
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.documents import (
    DecodedDocument,
    check_document_count,
    check_request,
    content_hash,
    decode_document,
    to_struct,
)
from ragline_gateway.timings import Timings

# The retriever looks up at most this many hashes per call.
LOOKUP_BATCH = 10_000
# A field the retriever names in a batch: `requests[<index>]<rest>`.
_BATCH_FIELD = re.compile(r"^requests\[(\d+)\](.*)$")


@dataclass(frozen=True)
class PreparedDocument:
    """A decoded document and its chunks, ready to embed and store."""

    document: DecodedDocument
    """The document."""
    chunks: list[Chunk]
    """Its chunks in order."""


class Ingester:
    """Turns documents into stored, embedded chunks through the embedder and retriever."""

    def __init__(self, config: GatewayConfig, deps: Dependencies) -> None:
        self.config = config
        self.deps = deps

    async def _embed(
        self, texts: Sequence[str], model: str, context: grpc.aio.ServicerContext | None
    ) -> list[list[float]]:
        """Passage vectors of `texts` from an embedder of `model`, the collection's."""
        embedder = await self.deps.embedders.for_model(model)
        vectors: list[list[float]] = []
        size = self.config.embed_batch_size
        for start in range(0, len(texts), size):
            request = embedder_service_pb2.EmbedRequest(
                texts=texts[start : start + size], input_type=embedder_service_pb2.INPUT_TYPE_PASSAGE
            )
            timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
            reply = await call("embedder", embedder.Embed(request, timeout=timeout))
            self.deps.embedders.check(model, reply)
            vectors.extend(list(e.values) for e in reply.embeddings)
        return vectors

    async def _stored_hashes(
        self, tenant: str, collection: str, hashes: Sequence[str], context: grpc.aio.ServicerContext | None
    ) -> set[str]:
        stored: set[str] = set()
        for start in range(0, len(hashes), LOOKUP_BATCH):
            request = retriever_service_pb2.LookupChunkHashesRequest(
                tenant=tenant, collection=collection, content_hashes=hashes[start : start + LOOKUP_BATCH]
            )
            timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
            reply = await call("retriever", self.deps.retriever.LookupChunkHashes(request, timeout=timeout))
            stored.update(reply.stored_hashes)
        return stored

    async def ensure_collection(
        self, tenant: str, name: str, context: grpc.aio.ServicerContext
    ) -> common_pb2.Collection:
        """The tenant's collection, created for the default embedder's model on first ingest;
        FAILED_PRECONDITION if no embedder serves the model of the one that exists."""
        try:
            found = await self.collection(tenant, name, context)
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        else:
            # Fails now rather than document by document: nothing could embed its texts.
            await self.deps.embedders.for_model(found.embedding_model)
            return found
        timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
        info = await call(
            "embedder",
            self.deps.embedder.GetModelInfo(embedder_service_pb2.GetModelInfoRequest(), timeout=timeout),
        )
        request = retriever_service_pb2.CreateStoredCollectionRequest(
            tenant=tenant, name=name, embedding_model=info.model, dimension=info.dimension
        )
        try:
            created = await self.deps.retriever.CreateStoredCollection(
                request, timeout=downstream_timeout(context, self.config.retrieve_timeout_seconds)
            )
        except grpc.aio.AioRpcError as exc:
            # Another ingest created it between our get and create: that one is as good.
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise from_rpc_error("retriever", exc) from None
            return await self.collection(tenant, name, context)
        collection: common_pb2.Collection = created.collection
        return collection

    async def collection(
        self, tenant: str, name: str, context: grpc.aio.ServicerContext | None
    ) -> common_pb2.Collection:
        """The tenant's collection as it is now (its model above all); NOT_FOUND if there is none."""
        reply = await call(
            "retriever",
            self.deps.retriever.GetStoredCollection(
                retriever_service_pb2.GetStoredCollectionRequest(
                    tenant=tenant, name=name, view=retriever_service_pb2.COLLECTION_VIEW_BASIC
                ),
                timeout=downstream_timeout(context, self.config.retrieve_timeout_seconds),
            ),
        )
        collection: common_pb2.Collection = reply.collection
        return collection

    def prepare(self, documents: Sequence[DecodedDocument]) -> list[PreparedDocument]:
        """Chunks the documents (CPU-bound: workers run it in a thread)."""
        with tracing.span("gateway.chunk", {"ragline.ingest.documents": len(documents)}) as span:
            prepared = [
                PreparedDocument(
                    d, chunk_sections(d.sections, self.config.chunk_tokens, self.config.chunk_overlap_tokens)
                )
                for d in documents
            ]
            if span.is_recording():
                span.set_attribute("ragline.ingest.chunks", sum(len(p.chunks) for p in prepared))
            return prepared

    async def new_vectors(
        self,
        tenant: str,
        collection: str,
        model: str,
        prepared: Sequence[PreparedDocument],
        context: grpc.aio.ServicerContext | None,
        timings: Timings,
    ) -> dict[str, list[float]]:
        """Embeddings of the chunk texts the collection does not store yet, by text.

        Text the collection already stores is not embedded again: the retriever reuses its vector.
        The rest is embedded with `model`, the collection's.
        `timings` receives the "lookup" and "embed" stages.
        """
        async with timings.stage("lookup"):
            hashes = sorted({content_hash(c.text) for p in prepared for c in p.chunks})
            stored = await self._stored_hashes(tenant, collection, hashes, context)
            new_texts = sorted(
                {c.text for p in prepared for c in p.chunks if content_hash(c.text) not in stored}
            )
        return await self.embed(new_texts, model, context, timings)

    async def embed(
        self, texts: Sequence[str], model: str, context: grpc.aio.ServicerContext | None, timings: Timings
    ) -> dict[str, list[float]]:
        """Passage vectors of `texts` by text, from an embedder of `model`; `timings` receives the "embed" stage."""
        async with timings.stage("embed"):
            return dict(zip(texts, await self._embed(texts, model, context), strict=True))

    def _upsert_request(
        self,
        tenant: str,
        collection: str,
        prepared: PreparedDocument,
        vectors: dict[str, list[float]],
        model: str,
        claim: ingest_queue_service_pb2.IngestClaim | None = None,
    ) -> retriever_service_pb2.UpsertDocumentRequest:
        """The UpsertDocument request that stores one document's chunks, with the vectors of new text."""
        document = prepared.document
        return retriever_service_pb2.UpsertDocumentRequest(
            tenant=tenant,
            collection=collection,
            document_id=document.document_id,
            metadata=document.metadata,
            content_hash=content_hash(document.text),
            chunks=[
                common_pb2.ChunkInput(
                    text=c.text,
                    token_count=c.token_count,
                    embedding=vectors.get(c.text),
                    metadata=to_struct(c.metadata),
                )
                for c in prepared.chunks
            ],
            claim=claim,
            embedding_model=model,
        )

    async def store(
        self,
        tenant: str,
        collection: str,
        prepared: PreparedDocument,
        vectors: dict[str, list[float]],
        model: str,
        context: grpc.aio.ServicerContext | None,
        claim: ingest_queue_service_pb2.IngestClaim | None = None,
    ) -> retriever_service_pb2.UpsertDocumentResponse:
        """Upserts one document's chunks, embedded with `model`; with a claim, the retriever finishes
        that job document in the same transaction."""
        upsert = self._upsert_request(tenant, collection, prepared, vectors, model, claim)
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        return await call("retriever", self.deps.retriever.UpsertDocument(upsert, timeout=timeout))

    async def store_all(
        self,
        tenant: str,
        collection: str,
        prepared: Sequence[PreparedDocument],
        vectors: dict[str, list[float]],
        model: str,
        context: grpc.aio.ServicerContext,
        sources: Sequence[int],
    ) -> retriever_service_pb2.BatchUpsertDocumentsResponse:
        """Upserts every document in one retriever transaction: all of them, or none.

        `sources[i]` is the index in the caller's request of the document `prepared[i]` was read
        from, so that a document the retriever refuses is named as the caller sent it.
        """
        # The documents inherit the batch's tenant and collection.
        batch = retriever_service_pb2.BatchUpsertDocumentsRequest(
            tenant=tenant,
            collection=collection,
            requests=[self._upsert_request("", "", p, vectors, "") for p in prepared],
            embedding_model=model,
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        try:
            stored: retriever_service_pb2.BatchUpsertDocumentsResponse = (
                await self.deps.retriever.BatchUpsertDocuments(batch, timeout=timeout)
            )
        except grpc.aio.AioRpcError as exc:
            refused = _refused_document(exc)
            if refused is None:
                raise from_rpc_error("retriever", exc) from None
            index, suffix = refused
            document_id = prepared[index].document.document_id
            message = (exc.details() or "").removeprefix(f"requests[{index}] (document {document_id!r}): ")
            raise InvalidArgument(
                f"document {document_id!r} cannot be stored: {message}; nothing of this request was stored",
                field=f"documents[{sources[index]}]{suffix}",
            ) from None
        return stored

    async def ingest(
        self,
        tenant: str,
        request: gateway_service_pb2.IngestDocumentsRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.IngestDocumentsResponse:
        """Ingests every document of the request into the tenant's collection, or none if any is
        invalid or cannot be stored."""
        if not request.documents:
            raise InvalidArgument("no documents given; send at least one", field="documents")
        check_request(request.documents, self.config.max_ingest_documents, self.config.max_request_bytes)
        seen: set[str] = set()
        documents: list[DecodedDocument] = []
        sources: list[int] = []
        for index, sent in enumerate(request.documents):
            for decoded in decode_document(index, sent, self.config.max_document_bytes):
                if decoded.document_id in seen:
                    raise InvalidArgument(
                        f"document {quote(decoded.document_id)} appears twice in one request",
                        field=f"documents[{index}]",
                    )
                seen.add(decoded.document_id)
                documents.append(decoded)
                sources.append(index)
        check_document_count(len(documents), self.config.max_ingest_documents)
        collection = check_collection_name(request.collection or self.config.default_collection, "collection")
        model = (await self.ensure_collection(tenant, collection, context)).embedding_model
        prepared = self.prepare(documents)
        # IngestDocuments reports no stage timings: its reply has no place for them.
        vectors = await self.new_vectors(
            tenant, collection, model, prepared, context, Timings(histogram=None)
        )
        stored = await self.store_all(tenant, collection, prepared, vectors, model, context, sources)
        return gateway_service_pb2.IngestDocumentsResponse(
            results=[
                gateway_service_pb2.IngestResult(
                    document_id=document.document.document_id,
                    chunk_count=len(document.chunks),
                    unchanged_chunks=reply.unchanged_chunks,
                    inserted_chunks=reply.inserted_chunks,
                    updated_chunks=reply.updated_chunks,
                    deleted_chunks=reply.deleted_chunks,
                )
                for document, reply in zip(prepared, stored.responses, strict=True)
            ],
            generation=stored.generation,
        )


def _refused_document(exc: grpc.aio.AioRpcError) -> tuple[int, str] | None:
    """The batch index of the document an INVALID_ARGUMENT of BatchUpsertDocuments names, and what
    of it is at fault (".metadata..." or ""); None for any other error."""
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return None
    status = rpc_status.from_call(exc)
    for detail in status.details if status is not None else []:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            for violation in bad_request.field_violations:
                named = _BATCH_FIELD.match(violation.field)
                if named:
                    rest = named.group(2)
                    return int(named.group(1)), rest if rest.startswith(".metadata") else ""
    return None
