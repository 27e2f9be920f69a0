"""The retriever publishes collections' state in Redis for the gateways and withdraws it on every change.

Runs on the session's real retriever (with the embedded Valkey its Stack started) and, for a
Redis that cannot be reached, a second retriever process on the same database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from test_retriever_service import TENANT, chunk

from ragline.collection_state import decode_state, state_key
from ragline.devstack import ServiceProcess, Stack
from ragline.embedded_redis import free_port
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

BASIC = pb.COLLECTION_VIEW_BASIC
LEASE_SECONDS = 1.0


@pytest.fixture
async def redis_client(retriever: ServiceProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(retriever.env["REDIS_URL"])
    yield client
    await client.aclose()


async def _published(client: aioredis.Redis, name: str, tenant: str = TENANT) -> int | None:
    """The generation published for `tenant`'s collection `name`, or None."""
    value = await client.get(state_key(tenant, name))
    return None if value is None else decode_state(value).generation


async def _published_soon(client: aioredis.Redis, name: str, tenant: str = TENANT) -> common_pb2.Collection:
    """The state published for `tenant`'s collection `name`, once it is: GetStoredCollection
    publishes it after its reply."""
    deadline = time.monotonic() + 5
    while (value := await client.get(state_key(tenant, name))) is None:
        assert time.monotonic() < deadline, f"{name}'s state was never published"
        await asyncio.sleep(0.01)
    return decode_state(value)


async def test_the_basic_view_publishes_and_every_change_withdraws(
    stub: pb_grpc.RetrieverServiceStub,
    new_collection: Callable[..., Awaitable[str]],
    redis_client: aioredis.Redis,
) -> None:
    name = await new_collection(8)
    assert await _published(redis_client, name) is None
    # The full view (with counts) is not what a query asks for, and publishes nothing.
    await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=name))
    assert await _published(redis_client, name) is None
    reply = await stub.GetStoredCollection(
        pb.GetStoredCollectionRequest(tenant=TENANT, name=name, view=BASIC)
    )
    assert await _published_soon(redis_client, name) == reply.collection
    changes: list[Callable[[], Awaitable[object]]] = [
        lambda: stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT, collection=name, document_id="a", chunks=[chunk("one", [1.0] * 8)]
            )
        ),
        lambda: stub.BatchUpsertDocuments(
            pb.BatchUpsertDocumentsRequest(
                tenant=TENANT,
                collection=name,
                requests=[
                    pb.UpsertDocumentRequest(tenant=TENANT, document_id="b", chunks=[chunk("two", [1.0] * 8)])
                ],
            )
        ),
        lambda: stub.DeleteStoredDocument(
            pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=name, document_id="a")
        ),
        lambda: stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=TENANT, name=name)),
        lambda: stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(tenant=TENANT, name=name, dimension=8)
        ),
    ]
    for generation, change in enumerate(changes, start=1):
        # A state to withdraw, also where the collection is gone (one a failed withdrawal left).
        await redis_client.set(state_key(TENANT, name), reply.collection.SerializeToString())
        await change()
        assert await _published(redis_client, name) is None, f"change {generation} left the state published"
        if generation < 4:
            published = await stub.GetStoredCollection(
                pb.GetStoredCollectionRequest(tenant=TENANT, name=name, view=BASIC)
            )
            assert published.collection.generation == generation
            assert (await _published_soon(redis_client, name)).generation == generation
    await stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=TENANT, name=name))


async def test_two_tenants_collections_of_one_name_are_published_and_withdrawn_apart(
    stub: pb_grpc.RetrieverServiceStub, redis_client: aioredis.Redis
) -> None:
    name = "published-twice"
    states = {}
    for tenant, dimension in (("acme-state", 4), ("globex-state", 8)):
        await stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(
                tenant=tenant, name=name, embedding_model=tenant, dimension=dimension
            )
        )
        await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=tenant, name=name, view=BASIC))
        states[tenant] = await _published_soon(redis_client, name, tenant)
        assert (states[tenant].embedding_model, states[tenant].dimension) == (tenant, dimension)
    # Both published again without a lease, so that only a withdrawal can remove them.
    for tenant, state in states.items():
        await redis_client.set(state_key(tenant, name), state.SerializeToString())
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant="acme-state", collection=name, document_id="a", chunks=[chunk("one", [1.0] * 4)]
        )
    )
    # Only the changed tenant's state is withdrawn; the other's, of the same name, stays.
    assert await _published(redis_client, name, "acme-state") is None
    assert await _published(redis_client, name, "globex-state") == 0
    await redis_client.delete(state_key("globex-state", name))


async def test_an_unchanged_document_leaves_the_state_published(
    stub: pb_grpc.RetrieverServiceStub,
    new_collection: Callable[..., Awaitable[str]],
    redis_client: aioredis.Redis,
) -> None:
    name = await new_collection(8)
    request = pb.UpsertDocumentRequest(
        tenant=TENANT, collection=name, document_id="a", chunks=[chunk("one", [1.0] * 8)]
    )
    await stub.UpsertDocument(request)
    await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=name, view=BASIC))
    assert (await _published_soon(redis_client, name)).generation == 1
    await stub.UpsertDocument(request)
    assert await _published(redis_client, name) == 1


@pytest.fixture(scope="module")
def cut_off_retriever(
    retriever: ServiceProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A second retriever on the session's database whose Redis is a port nothing listens on."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "RETRIEVER_STATE_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    stack = Stack(
        state=Path(tmp_path_factory.mktemp("cut-off")), services=("retriever",), free_ports=True, env=env
    )
    stack.start()
    try:
        yield stack["retriever"]
    finally:
        stack.stop()


async def test_a_change_redis_cannot_be_told_of_waits_out_the_lease(
    cut_off_retriever: ServiceProcess, new_collection: Callable[..., Awaitable[str]]
) -> None:
    name = await new_collection(8)
    async with grpc.aio.insecure_channel(cut_off_retriever.address) as channel:
        cut_off = pb_grpc.RetrieverServiceStub(channel)
        # Reads work without Redis, and publish nothing.
        reply = await cut_off.GetStoredCollection(
            pb.GetStoredCollectionRequest(tenant=TENANT, name=name, view=BASIC)
        )
        assert reply.collection.name == name
        started = time.monotonic()
        written = await cut_off.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT, collection=name, document_id="a", chunks=[chunk("one", [1.0] * 8)]
            )
        )
        # Every state a gateway may hold from before the commit has expired when the call returns.
        assert time.monotonic() - started >= LEASE_SECONDS
        assert written.generation == 1
