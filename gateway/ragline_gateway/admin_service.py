"""The gateway's admin API, ragline.v1.AdminService: the API keys and the collections of the caller's tenant.

The tenant is always the caller's (`principal.current()`), never a request field, so an admin
manages its own tenant's keys only; another tenant's key id is NOT_FOUND, as if it did not
exist. The gateway makes each token itself (`ragline.api_keys`) and hands the retriever's key
store only its id and the SHA-256 of its secret: the secret leaves the gateway once, in the
CreateApiKey response. The audit interceptor logs every call here with the key id it names
(never the token: it reads only fields such as `key_id`).

The collection methods read the caller's tenant once and hand it to `admin_collections`, which
forwards it to the retriever's *StoredCollection RPCs.
"""

from __future__ import annotations

import grpc

from ragline.api_keys import is_key_id, new_token, secret_sha256
from ragline.channels import downstream_timeout
from ragline.errors import InvalidArgument
from ragline.v1 import admin_service_pb2 as pb
from ragline.v1 import admin_service_pb2_grpc as pb_grpc
from ragline.v1 import api_key_store_service_pb2 as store_pb
from ragline.validation import check_enum, check_text, quote
from ragline_gateway.admin_collections import AdminCollections
from ragline_gateway.api_key_cache import ApiKeyVerifier
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.ingest_worker import IngestWorkers
from ragline_gateway.principal import current

MAX_DISPLAY_NAME_CHARS = 200


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Implements ragline.v1.AdminService: keys over the retriever's ApiKeyStoreService, collections
    over its RetrieverService."""

    def __init__(
        self, config: GatewayConfig, deps: Dependencies, keys: ApiKeyVerifier, workers: IngestWorkers
    ) -> None:
        self.config = config
        self.deps = deps
        # Woken when a migration queues its documents.
        self.workers = workers
        # This replica's key cache, told of revocations so that it refuses a revoked key at once.
        self.keys = keys
        self.collections = AdminCollections(config, deps)

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return downstream_timeout(context, self.config.retrieve_timeout_seconds)

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        check_enum(request.role, pb.Role, "role")
        if request.role == pb.ROLE_UNSPECIFIED:
            raise InvalidArgument("role is required: ROLE_READER, ROLE_WRITER or ROLE_ADMIN", field="role")
        check_text(request.display_name, "display_name", MAX_DISPLAY_NAME_CHARS)
        token = new_token()
        key = pb.ApiKey(
            key_id=token.key_id, tenant=current().tenant, role=request.role, display_name=request.display_name
        )
        stored = await call(
            "retriever",
            self.deps.api_keys.CreateStoredApiKey(
                store_pb.CreateStoredApiKeyRequest(api_key=key, secret_sha256=secret_sha256(token.secret)),
                timeout=self._timeout(context),
            ),
        )
        return pb.CreateApiKeyResponse(api_key=stored.api_key, token=str(token))

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        forwarded = store_pb.ListStoredApiKeysRequest(
            tenant=current().tenant, page_size=request.page_size, page_token=request.page_token
        )
        reply = await call(
            "retriever", self.deps.api_keys.ListStoredApiKeys(forwarded, timeout=self._timeout(context))
        )
        return pb.ListApiKeysResponse(api_keys=reply.api_keys, next_page_token=reply.next_page_token)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        if not is_key_id(request.key_id):
            raise InvalidArgument(
                f"key_id {quote(request.key_id)} is not an API key id (16 characters a-z and 2-7, as "
                "ListApiKeys shows it)",
                field="key_id",
            )
        forwarded = store_pb.RevokeStoredApiKeyRequest(tenant=current().tenant, key_id=request.key_id)
        reply = await call(
            "retriever", self.deps.api_keys.RevokeStoredApiKey(forwarded, timeout=self._timeout(context))
        )
        self.keys.forget(request.key_id)
        return pb.RevokeApiKeyResponse(api_key=reply.api_key)

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        return await self.collections.create(current().tenant, request, context)

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        return await self.collections.get(current().tenant, request, context)

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        return await self.collections.list(current().tenant, request, context)

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        return await self.collections.delete(current().tenant, request, context)

    async def MigrateCollection(
        self, request: pb.MigrateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.MigrateCollectionResponse:
        reply = await self.collections.migrate(current().tenant, request, context)
        # The job's documents wait in the queue: workers that sleep between polls start now.
        self.workers.wake()
        return reply
