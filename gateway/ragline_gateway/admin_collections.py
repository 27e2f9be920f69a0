"""The AdminService's collection methods: create, get, list, delete and migrate the caller's tenant's collections.

The retriever owns collections (its *StoredCollection RPCs); this module checks a request,
fills in what the gateway knows (the embedder's model and dimension), and forwards it with the
tenant the handler read from the caller's credential. The retriever confines every statement to
that tenant, so another tenant's collection, of whatever name, is NOT_FOUND: its existence does
not leak. Collections are also created implicitly by a first ingest (`Ingester.ensure_collection`);
creating one here first only makes its model explicit.
"""

from __future__ import annotations

from typing import Any

import grpc

from ragline.channels import downstream_timeout
from ragline.errors import InvalidArgument
from ragline.v1 import admin_service_pb2, embedder_service_pb2, retriever_service_pb2
from ragline.validation import MAX_ID_CHARS, check_collection_name, check_text, quote
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call

# The public contract's page sizes: 0 means the default, larger than the most are capped.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The page size to ask the retriever for: the default for 0, capped at MAX_PAGE_SIZE; INVALID_ARGUMENT below 0."""
    if requested < 0:
        raise InvalidArgument(
            f"page_size is {requested}; send 0 for {DEFAULT_PAGE_SIZE} or a positive number (at most "
            f"{MAX_PAGE_SIZE} are returned)",
            field="page_size",
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class AdminCollections:
    """The collection methods of the AdminService, each for one tenant."""

    def __init__(self, config: GatewayConfig, deps: Dependencies) -> None:
        self.config = config
        self.deps = deps

    async def _retriever(self, rpc: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        return await call("retriever", rpc(request, timeout=timeout))

    async def create(
        self,
        tenant: str,
        request: admin_service_pb2.CreateCollectionRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_service_pb2.CreateCollectionResponse:
        """Creates an empty collection of the tenant for the embedder's model; ALREADY_EXISTS if the
        tenant has one of that name."""
        name = check_collection_name(request.name, "name")
        check_text(request.embedding_model, "embedding_model", MAX_ID_CHARS)
        timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
        info = await call(
            "embedder",
            self.deps.embedder.GetModelInfo(embedder_service_pb2.GetModelInfoRequest(), timeout=timeout),
        )
        # The gateway embeds every text of the collection with the embedder's model: a collection
        # made for another could never be ingested into nor searched.
        if request.embedding_model and request.embedding_model != info.model:
            raise InvalidArgument(
                f"embedding_model {quote(request.embedding_model)} is not the model the embedder serves "
                f"({quote(info.model)}); name that model or leave embedding_model empty",
                field="embedding_model",
            )
        reply = await self._retriever(
            self.deps.retriever.CreateStoredCollection,
            retriever_service_pb2.CreateStoredCollectionRequest(
                tenant=tenant, name=name, embedding_model=info.model, dimension=info.dimension
            ),
            context,
        )
        return admin_service_pb2.CreateCollectionResponse(collection=reply.collection)

    async def get(
        self,
        tenant: str,
        request: admin_service_pb2.GetCollectionRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_service_pb2.GetCollectionResponse:
        """The tenant's collection with its document and chunk counts."""
        reply = await self._retriever(
            self.deps.retriever.GetStoredCollection,
            retriever_service_pb2.GetStoredCollectionRequest(
                tenant=tenant,
                name=check_collection_name(request.name, "name"),
                view=retriever_service_pb2.COLLECTION_VIEW_FULL,
            ),
            context,
        )
        return admin_service_pb2.GetCollectionResponse(collection=reply.collection)

    async def list(
        self,
        tenant: str,
        request: admin_service_pb2.ListCollectionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_service_pb2.ListCollectionsResponse:
        """A page of the tenant's collections, by name."""
        reply = await self._retriever(
            self.deps.retriever.ListStoredCollections,
            retriever_service_pb2.ListStoredCollectionsRequest(
                tenant=tenant, page_size=page_size(request.page_size), page_token=request.page_token
            ),
            context,
        )
        return admin_service_pb2.ListCollectionsResponse(
            collections=reply.collections, next_page_token=reply.next_page_token
        )

    async def delete(
        self,
        tenant: str,
        request: admin_service_pb2.DeleteCollectionRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_service_pb2.DeleteCollectionResponse:
        """Deletes the tenant's collection with every document; its cached results become unreachable,
        as a collection created again under its name is another incarnation (`ragline_gateway.query`)."""
        reply = await self._retriever(
            self.deps.retriever.DeleteStoredCollection,
            retriever_service_pb2.DeleteStoredCollectionRequest(
                tenant=tenant, name=check_collection_name(request.name, "name")
            ),
            context,
        )
        return admin_service_pb2.DeleteCollectionResponse(deleted_documents=reply.deleted_documents)

    async def migrate(
        self,
        tenant: str,
        request: admin_service_pb2.MigrateCollectionRequest,
        context: grpc.aio.ServicerContext,
    ) -> admin_service_pb2.MigrateCollectionResponse:
        """Starts moving the tenant's collection to another model, which one of the gateway's
        embedders must serve (its vectors' dimension is that embedder's)."""
        name = check_collection_name(request.name, "name")
        if not request.embedding_model.strip():
            raise InvalidArgument(
                "embedding_model is required: the model to move the collection to", field="embedding_model"
            )
        model = check_text(request.embedding_model, "embedding_model", MAX_ID_CHARS)
        dimension = await self.deps.embedders.dimension(model)
        reply = await self._retriever(
            self.deps.retriever.MigrateStoredCollection,
            retriever_service_pb2.MigrateStoredCollectionRequest(
                tenant=tenant, name=name, embedding_model=model, dimension=dimension
            ),
            context,
        )
        return admin_service_pb2.MigrateCollectionResponse(job=reply.job)
