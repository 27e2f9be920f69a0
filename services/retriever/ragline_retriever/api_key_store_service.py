"""The `ragline.v1.ApiKeyStoreService` servicer: the gateways' API keys, as thin handlers over `api_key_store.py`.

It serves in the retriever's process beside RetrieverService, because the retriever owns every
SQL statement. It is internal: the gateways call it to store the keys they make, to look a key
up when a token names one they have not cached, and to list and revoke a tenant's keys; the
`ragline keys create --retriever` operator command calls it to make a new tenant's first key.
"""

from __future__ import annotations

import re
from datetime import datetime

import grpc

from ragline.api_keys import is_key_id
from ragline.errors import InvalidArgument
from ragline.v1 import admin_service_pb2
from ragline.v1 import api_key_store_service_pb2 as pb
from ragline.v1 import api_key_store_service_pb2_grpc as pb_grpc
from ragline.validation import check_enum, check_text, quote
from ragline_retriever import api_key_store
from ragline_retriever.database import Database
from ragline_retriever.paging import decode_page_token, next_page_token, page_size

# Longest tenant name; tenants are names, not documents.
MAX_TENANT_CHARS = 128
MAX_DISPLAY_NAME_CHARS = 200
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _tenant(value: str, field: str = "tenant") -> str:
    if not value.strip():
        raise InvalidArgument(f"{field} is empty; every key belongs to a tenant", field=field)
    return check_text(value, field, MAX_TENANT_CHARS)


def _key_id(value: str, field: str = "key_id") -> str:
    if not is_key_id(value):
        raise InvalidArgument(
            f"{field} {quote(value)} is not an API key id (16 characters a-z and 2-7)", field=field
        )
    return value


class ApiKeyStoreServicer(pb_grpc.ApiKeyStoreServiceServicer):
    """Serves the API keys from the retriever's database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def CreateStoredApiKey(
        self, request: pb.CreateStoredApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStoredApiKeyResponse:
        key = request.api_key
        _key_id(key.key_id, "api_key.key_id")
        _tenant(key.tenant, "api_key.tenant")
        check_enum(key.role, admin_service_pb2.Role, "api_key.role")
        if key.role == admin_service_pb2.ROLE_UNSPECIFIED:
            raise InvalidArgument("api_key.role is required: reader, writer or admin", field="api_key.role")
        check_text(key.display_name, "api_key.display_name", MAX_DISPLAY_NAME_CHARS)
        if _SHA256_HEX.fullmatch(request.secret_sha256) is None:
            raise InvalidArgument(
                "secret_sha256 must be the SHA-256 of the key's secret as 64 lowercase hex characters",
                field="secret_sha256",
            )
        async with self._db.connection() as conn:
            row = await api_key_store.create_key(conn, key, request.secret_sha256)
        return pb.CreateStoredApiKeyResponse(api_key=api_key_store.api_key_pb(row))

    async def LookupStoredApiKey(
        self, request: pb.LookupStoredApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupStoredApiKeyResponse:
        async with self._db.connection() as conn:
            row = await api_key_store.lookup_key(conn, _key_id(request.key_id))
        return pb.LookupStoredApiKeyResponse(
            api_key=api_key_store.api_key_pb(row), secret_sha256=row["secret_sha256"]
        )

    async def ListStoredApiKeys(
        self, request: pb.ListStoredApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStoredApiKeysResponse:
        tenant = _tenant(request.tenant)
        size = page_size(request.page_size)
        scope = f"api-keys/{tenant}"
        after_key = decode_page_token(request.page_token, scope)
        after = None
        if after_key:
            created, _, key_id = after_key.partition(" ")
            try:
                after = (datetime.fromisoformat(created), _key_id(key_id, "page_token"))
            except (ValueError, InvalidArgument):
                raise InvalidArgument(
                    "page_token is not a next_page_token of this listing", field="page_token"
                ) from None
        async with self._db.connection() as conn:
            rows = await api_key_store.list_keys(conn, tenant, after, size + 1)
        return pb.ListStoredApiKeysResponse(
            api_keys=[api_key_store.api_key_pb(row) for row in rows[:size]],
            next_page_token=next_page_token(
                scope, rows, size, lambda row: f"{row['created_at'].isoformat()} {row['key_id']}"
            ),
        )

    async def RevokeStoredApiKey(
        self, request: pb.RevokeStoredApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeStoredApiKeyResponse:
        tenant = _tenant(request.tenant)
        async with self._db.connection() as conn:
            row = await api_key_store.revoke_key(conn, tenant, _key_id(request.key_id))
        return pb.RevokeStoredApiKeyResponse(api_key=api_key_store.api_key_pb(row))
