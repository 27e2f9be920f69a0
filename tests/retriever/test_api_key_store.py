"""The retriever's API key store: a key's record and hash stored, looked up, listed per tenant, revoked once."""

from __future__ import annotations

import grpc
import pytest

from ragline.api_keys import new_token, secret_sha256
from ragline.v1 import admin_service_pb2 as admin
from ragline.v1 import api_key_store_service_pb2 as pb
from ragline.v1 import api_key_store_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def keys(channel: grpc.aio.Channel) -> pb_grpc.ApiKeyStoreServiceStub:
    return pb_grpc.ApiKeyStoreServiceStub(channel)


async def store(
    keys: pb_grpc.ApiKeyStoreServiceStub, tenant: str, role: admin.Role = admin.ROLE_READER, name: str = ""
) -> tuple[admin.ApiKey, str]:
    token = new_token()
    key = admin.ApiKey(key_id=token.key_id, tenant=tenant, role=role, display_name=name)
    reply = await keys.CreateStoredApiKey(
        pb.CreateStoredApiKeyRequest(api_key=key, secret_sha256=secret_sha256(token.secret))
    )
    return reply.api_key, token.secret


async def test_a_stored_key_is_looked_up_with_its_hash_and_never_its_secret(
    keys: pb_grpc.ApiKeyStoreServiceStub,
) -> None:
    key, secret = await store(keys, "acme", admin.ROLE_WRITER, "indexer")
    assert (key.tenant, key.role, key.display_name) == ("acme", admin.ROLE_WRITER, "indexer")
    assert key.HasField("create_time") and not key.HasField("revoke_time")
    found = await keys.LookupStoredApiKey(pb.LookupStoredApiKeyRequest(key_id=key.key_id))
    assert found.api_key == key
    assert found.secret_sha256 == secret_sha256(secret)
    assert secret not in str(found)


async def test_keys_are_listed_per_tenant_oldest_first_a_page_at_a_time(
    keys: pb_grpc.ApiKeyStoreServiceStub,
) -> None:
    made = [(await store(keys, "paged"))[0].key_id for _ in range(5)]
    await store(keys, "someone-else")
    seen: list[str] = []
    token = ""
    while True:
        page = await keys.ListStoredApiKeys(
            pb.ListStoredApiKeysRequest(tenant="paged", page_size=2, page_token=token)
        )
        seen += [k.key_id for k in page.api_keys]
        token = page.next_page_token
        if not token:
            break
    assert seen == made
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keys.ListStoredApiKeys(
            pb.ListStoredApiKeysRequest(tenant="someone-else", page_token=token or "x")
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_revoking_is_confined_to_the_tenant_and_keeps_the_first_revoke_time(
    keys: pb_grpc.ApiKeyStoreServiceStub,
) -> None:
    key, _ = await store(keys, "owner")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keys.RevokeStoredApiKey(pb.RevokeStoredApiKeyRequest(tenant="intruder", key_id=key.key_id))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    found = await keys.LookupStoredApiKey(pb.LookupStoredApiKeyRequest(key_id=key.key_id))
    assert not found.api_key.HasField("revoke_time")
    first = await keys.RevokeStoredApiKey(pb.RevokeStoredApiKeyRequest(tenant="owner", key_id=key.key_id))
    again = await keys.RevokeStoredApiKey(pb.RevokeStoredApiKeyRequest(tenant="owner", key_id=key.key_id))
    assert first.api_key.HasField("revoke_time")
    assert again.api_key.revoke_time == first.api_key.revoke_time


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.CreateStoredApiKeyRequest(api_key=admin.ApiKey(key_id="short", tenant="t", role=1)),
            "api_key.key_id",
        ),
        (
            pb.CreateStoredApiKeyRequest(
                api_key=admin.ApiKey(key_id="a" * 16, role=1), secret_sha256="0" * 64
            ),
            "api_key.tenant",
        ),
        (
            pb.CreateStoredApiKeyRequest(
                api_key=admin.ApiKey(key_id="a" * 16, tenant="t"), secret_sha256="0" * 64
            ),
            "api_key.role",
        ),
        (
            pb.CreateStoredApiKeyRequest(
                api_key=admin.ApiKey(key_id="a" * 16, tenant="t", role=1), secret_sha256="x"
            ),
            "secret_sha256",
        ),
    ],
)
async def test_a_malformed_key_is_invalid_argument_naming_the_field(
    keys: pb_grpc.ApiKeyStoreServiceStub, request_: pb.CreateStoredApiKeyRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keys.CreateStoredApiKey(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (raised.value.details() or "")


async def test_an_unknown_key_is_not_found_and_a_malformed_id_invalid(
    keys: pb_grpc.ApiKeyStoreServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keys.LookupStoredApiKey(pb.LookupStoredApiKeyRequest(key_id="a" * 16))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await keys.LookupStoredApiKey(pb.LookupStoredApiKeyRequest(key_id="'; DROP TABLE api_keys; --"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
