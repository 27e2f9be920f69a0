"""The gateway's API key verifier against a real retriever: keys checked from a cache that runs out.

The verifier's clock is the test's, so expiry is tested without waiting; the key store is the
retriever process, as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from ragline.api_keys import ApiKeyToken, new_token, secret_sha256
from ragline.devstack import ServiceProcess, Stack
from ragline.errors import Unauthenticated
from ragline.v1 import admin_service_pb2 as admin
from ragline.v1 import api_key_store_service_pb2 as store_pb
from ragline.v1 import api_key_store_service_pb2_grpc as store_grpc
from ragline_gateway.api_key_cache import ApiKeyVerifier
from ragline_gateway.principal import Principal, Role

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    state: Path = tmp_path_factory.mktemp("keys-retriever")
    stack = Stack(state=state, services=("retriever",), free_ports=True, env={"DATABASE_URL": ""})
    stack.start()
    try:
        yield stack["retriever"]
    finally:
        stack.stop()


@pytest.fixture
async def store(retriever: ServiceProcess) -> AsyncIterator[store_grpc.ApiKeyStoreServiceStub]:
    async with grpc.aio.insecure_channel(retriever.address) as channel:
        yield store_grpc.ApiKeyStoreServiceStub(channel)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def stored_key(
    store: store_grpc.ApiKeyStoreServiceStub, tenant: str = "acme", role: admin.Role = admin.ROLE_WRITER
) -> ApiKeyToken:
    token = new_token()
    key = admin.ApiKey(key_id=token.key_id, tenant=tenant, role=role)
    await store.CreateStoredApiKey(
        store_pb.CreateStoredApiKeyRequest(api_key=key, secret_sha256=secret_sha256(token.secret))
    )
    return token


def lookups(outcome: str) -> float:
    return REGISTRY.get_sample_value("ragline_gateway_api_key_lookups_total", {"outcome": outcome}) or 0.0


async def refusal(verifier: ApiKeyVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as raised:
        await verifier.principal(token)
    return raised.value.message


async def test_a_key_names_its_tenant_role_and_id_and_is_then_served_from_the_cache(
    store: store_grpc.ApiKeyStoreServiceStub,
) -> None:
    token = await stored_key(store)
    verifier = ApiKeyVerifier(store, 5.0, 5.0)
    misses, hits = lookups("miss"), lookups("hit")
    assert await verifier.principal(str(token)) == Principal("acme", Role.WRITER, token.key_id)
    for _ in range(10):
        await verifier.principal(str(token))
    assert (lookups("miss") - misses, lookups("hit") - hits) == (1, 10)


async def test_a_wrong_secret_or_an_unknown_id_is_refused_and_unknown_ids_cost_one_lookup(
    store: store_grpc.ApiKeyStoreServiceStub,
) -> None:
    token = await stored_key(store)
    verifier = ApiKeyVerifier(store, 5.0, 5.0)
    wrong_secret = str(ApiKeyToken(token.key_id, new_token().secret))
    assert "not known" in await refusal(verifier, wrong_secret)
    # The record cached by that refusal still lets the right secret in.
    await verifier.principal(str(token))
    unknown = str(new_token())
    misses = lookups("miss")
    for _ in range(5):
        message = await refusal(verifier, unknown)
        assert "not known" in message and unknown not in message
    assert lookups("miss") - misses == 1


async def test_a_revoked_key_is_refused_once_its_entry_runs_out(
    store: store_grpc.ApiKeyStoreServiceStub,
) -> None:
    token = await stored_key(store)
    clock = Clock()
    verifier = ApiKeyVerifier(store, 5.0, 5.0, clock)
    await verifier.principal(str(token))
    await store.RevokeStoredApiKey(store_pb.RevokeStoredApiKeyRequest(tenant="acme", key_id=token.key_id))
    clock.now += 4.9
    await verifier.principal(str(token))  # still cached: the stated bound is the cache time
    clock.now += 0.2
    assert "was revoked" in await refusal(verifier, str(token))
    # `forget` (this replica revoked it) refuses at once, without waiting for the entry to run out.
    other = await stored_key(store)
    await verifier.principal(str(other))
    await store.RevokeStoredApiKey(store_pb.RevokeStoredApiKeyRequest(tenant="acme", key_id=other.key_id))
    verifier.forget(other.key_id)
    assert "was revoked" in await refusal(verifier, str(other))


async def test_concurrent_calls_with_one_uncached_key_share_one_lookup_and_zero_seconds_caches_nothing(
    store: store_grpc.ApiKeyStoreServiceStub,
) -> None:
    token = await stored_key(store, role=admin.ROLE_READER)
    verifier = ApiKeyVerifier(store, 5.0, 5.0)
    misses = lookups("miss")
    principals = await asyncio.gather(*(verifier.principal(str(token)) for _ in range(20)))
    assert {p.role for p in principals} == {Role.READER}
    assert lookups("miss") - misses == 1
    uncached = ApiKeyVerifier(store, 0.0, 5.0)
    misses = lookups("miss")
    for _ in range(3):
        await uncached.principal(str(token))
    assert lookups("miss") - misses == 3
