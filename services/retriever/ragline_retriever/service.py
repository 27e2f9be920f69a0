"""The `ragline.v1.RetrieverService` servicer: collections, documents and search, as thin handlers.

Each handler validates its request (`validation.py`), the tenant it is confined to first, runs it
against PostgreSQL through the module that owns its SQL (`collection_store.py`, `document_store.py`,
`searcher.py`), and maps the result to its response. Every write is one transaction, so a call
either happens completely or not at all, and a change to a collection is announced to the gateways
(`state_publisher.py`). The servicer also runs the process's lifecycle for both of its services.
"""

from __future__ import annotations

import grpc

from ragline import tracing
from ragline.metrics import search_mode_label
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline.validation import check_collection_name, check_document_id, check_enum, check_tenant
from ragline_retriever import collection_migrations, collection_store, document_store, jobs
from ragline_retriever.bm25_statistics import fold
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.conversation_store import ConversationPurger
from ragline_retriever.database import Database
from ragline_retriever.document_store import Upserted
from ragline_retriever.ingest_queue_service import refresh_queue_gauges
from ragline_retriever.messages import collection_pb, document_pb, hit_pb
from ragline_retriever.paging import decode_page_token, listing_scope, next_page_token, page_size
from ragline_retriever.periodic import Periodic
from ragline_retriever.quotas import TenantQuota
from ragline_retriever.read_replicas import ReadReplicas
from ragline_retriever.searcher import Searcher
from ragline_retriever.state_publisher import StatePublisher
from ragline_retriever.validation import (
    validate_batch_upsert,
    validate_lookup,
    validate_migration,
    validate_new_collection,
    validate_search,
    validate_upsert,
)


class RetrieverServicer(pb_grpc.RetrieverServiceServicer):
    """Serves collections, documents and search from the database opened by `start()`."""

    def __init__(self, config: RetrieverConfig, database: Database) -> None:
        self._config = config
        self._db = database
        # Searches may read from streaming replicas; everything else uses the primary.
        self._replicas = ReadReplicas(config, database) if config.read_urls else None
        self._searcher = Searcher(config, database, self._replicas)
        self._purger = ConversationPurger(database, config.conversation_purge_interval_seconds)
        self._folder = Periodic(
            "folding the BM25 statistics", config.bm25_fold_seconds, lambda: fold(database)
        )
        self._quota = TenantQuota(config.tenant_max_documents, config.tenant_max_chunks)
        self._publisher = StatePublisher(
            config.redis_url,
            lease_seconds=config.state_lease_seconds,
            timeout_seconds=config.redis_timeout_seconds,
        )
        self._migrations = Periodic(
            "advancing collection migrations",
            config.migration_check_seconds,
            lambda: collection_migrations.drive(database, self._publisher.changing),
        )

    async def start(self) -> None:
        """Connects to (or starts) PostgreSQL and migrates it, and checks the read replicas, while
        health reports NOT_SERVING."""
        await self._db.start()
        if self._replicas is not None:
            await self._replicas.start()
        self._folder.start()
        self._migrations.start()

    async def check_ready(self) -> None:
        """Raises while the database does not answer; refreshes the ingest queue gauges when it does, and
        deletes expired conversations when their purge is due."""
        await self._db.check_ready()
        await refresh_queue_gauges(self._db)
        await self._purger.run_if_due()

    async def stop(self) -> None:
        """Closes the pools and stops the embedded PostgreSQL if this process started it."""
        await self._folder.stop()
        await self._migrations.stop()
        if self._replicas is not None:
            await self._replicas.stop()
        await self._db.stop()
        await self._publisher.close()

    async def CreateStoredCollection(
        self, request: pb.CreateStoredCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStoredCollectionResponse:
        tenant, name = validate_new_collection(request)
        async with self._publisher.changing(tenant, name) as change, self._db.connection() as conn:
            change.made = True
            row = await collection_store.create_collection(
                conn, self._config, tenant, name, request.embedding_model, request.dimension
            )
        return pb.CreateStoredCollectionResponse(collection=collection_pb(row))

    async def GetStoredCollection(
        self, request: pb.GetStoredCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStoredCollectionResponse:
        tenant = check_tenant(request.tenant)
        name = check_collection_name(request.name, "name")
        check_enum(request.view, pb.CollectionView, "view")
        basic = request.view == pb.COLLECTION_VIEW_BASIC
        # The basic view is what a gateway asks for on a query: published for the next ones.
        publication = await self._publisher.begin(tenant, name) if basic else None
        async with self._db.connection() as conn:
            row = await collection_store.get_collection(conn, tenant, name, counted=not basic)
            collection = collection_pb(row)
        if publication is not None:
            self._publisher.publish_later(publication, collection)
        return pb.GetStoredCollectionResponse(collection=collection)

    async def ListStoredCollections(
        self, request: pb.ListStoredCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStoredCollectionsResponse:
        tenant = check_tenant(request.tenant)
        size = page_size(request.page_size)
        scope = listing_scope("collections", tenant)
        after = decode_page_token(request.page_token, scope)
        async with self._db.connection() as conn:
            rows = await collection_store.list_collections(conn, tenant, after, size + 1)
        return pb.ListStoredCollectionsResponse(
            collections=[collection_pb(row) for row in rows[:size]],
            next_page_token=next_page_token(scope, rows, size, lambda row: row["name"]),
        )

    async def DeleteStoredCollection(
        self, request: pb.DeleteStoredCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteStoredCollectionResponse:
        tenant = check_tenant(request.tenant)
        name = check_collection_name(request.name, "name")
        async with self._publisher.changing(tenant, name) as change, self._db.connection() as conn:
            documents = await collection_store.delete_collection(conn, tenant, name, change)
        return pb.DeleteStoredCollectionResponse(deleted_documents=documents)

    async def UpsertDocument(
        self, request: pb.UpsertDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertDocumentResponse:
        tenant, name, document_id = validate_upsert(request)
        if request.HasField("claim"):
            jobs.validate_claim(request.claim)
        async with self._publisher.changing(tenant, name) as change, self._db.connection() as conn:
            upserted = await document_store.upsert_document(conn, request, document_id, change, self._quota)
        return _upsert_response(name, upserted)

    async def BatchUpsertDocuments(
        self, request: pb.BatchUpsertDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchUpsertDocumentsResponse:
        tenant, name, document_ids = validate_batch_upsert(request)
        # As for one document: the change is announced after the commit, before the answer.
        async with self._publisher.changing(tenant, name) as change, self._db.connection() as conn:
            upserted = await document_store.upsert_documents(conn, request, document_ids, change, self._quota)
        return pb.BatchUpsertDocumentsResponse(
            responses=[_upsert_response(name, each) for each in upserted],
            generation=max(each.generation for each in upserted),
        )

    async def SearchChunks(
        self, request: pb.SearchChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchChunksResponse:
        valid = validate_search(request, self._config)
        with tracing.span("retriever.search", {"ragline.tenant": valid.tenant}) as span:
            tracing.set_text(span, "ragline.question", request.query_text)
            hits, generation = await self._searcher.search(request, valid)
            tracing.record_hits(span, search_mode_label(valid.mode), valid.top_k, [hit.score for hit in hits])
        return pb.SearchChunksResponse(hits=[hit_pb(hit) for hit in hits], generation=generation)

    async def LookupChunkHashes(
        self, request: pb.LookupChunkHashesRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupChunkHashesResponse:
        tenant, name, document_id, hashes = validate_lookup(request)
        async with self._db.connection() as conn:
            collection_id = await collection_store.collection_id(conn, tenant, name)
            found = await document_store.lookup_chunk_hashes(conn, collection_id, document_id, hashes)
        return pb.LookupChunkHashesResponse(stored_hashes=found)

    async def GetStoredDocument(
        self, request: pb.GetStoredDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStoredDocumentResponse:
        tenant = check_tenant(request.tenant)
        name = check_collection_name(request.collection, "collection")
        document_id = check_document_id(request.document_id, "document_id")
        async with self._db.connection() as conn:
            collection_id = await collection_store.collection_id(conn, tenant, name)
            row = await document_store.get_document(conn, collection_id, name, document_id)
        return pb.GetStoredDocumentResponse(document=document_pb(name, row))

    async def ListStoredDocuments(
        self, request: pb.ListStoredDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStoredDocumentsResponse:
        tenant = check_tenant(request.tenant)
        name = check_collection_name(request.collection, "collection")
        size = page_size(request.page_size)
        scope = listing_scope(f"documents/{name}", tenant)
        after = decode_page_token(request.page_token, scope)
        async with self._db.connection() as conn:
            collection_id = await collection_store.collection_id(conn, tenant, name)
            rows = await document_store.list_documents(conn, collection_id, after, size + 1)
        return pb.ListStoredDocumentsResponse(
            documents=[document_pb(name, row) for row in rows[:size]],
            next_page_token=next_page_token(scope, rows, size, lambda row: row["document_id"]),
        )

    async def DeleteStoredDocument(
        self, request: pb.DeleteStoredDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteStoredDocumentResponse:
        tenant = check_tenant(request.tenant)
        name = check_collection_name(request.collection, "collection")
        document_id = check_document_id(request.document_id, "document_id")
        async with self._publisher.changing(tenant, name) as change, self._db.connection() as conn:
            deleted, generation = await document_store.delete_document(
                conn, tenant, name, document_id, change
            )
        return pb.DeleteStoredDocumentResponse(deleted_chunks=deleted, generation=generation)

    async def MigrateStoredCollection(
        self, request: pb.MigrateStoredCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.MigrateStoredCollectionResponse:
        tenant, name, model = validate_migration(request)
        async with self._db.connection() as conn:
            job = await collection_migrations.start(
                conn, self._config, tenant, name, model, request.dimension
            )
        return pb.MigrateStoredCollectionResponse(job=job)


def _upsert_response(name: str, upserted: Upserted) -> pb.UpsertDocumentResponse:
    """What an upsert into the collection `name` stored and changed, as the API's response."""
    plan = upserted.plan
    return pb.UpsertDocumentResponse(
        document=document_pb(name, upserted.document),
        unchanged_chunks=plan.unchanged,
        inserted_chunks=len(plan.insert),
        updated_chunks=len(plan.update),
        deleted_chunks=plan.deleted,
        generation=upserted.generation,
    )
