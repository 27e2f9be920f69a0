"""Searches on a real streaming standby of the embedded PostgreSQL 18 (`ragline.embedded_standby`):
served by the replica when it has the caller's generation, by the primary when it has not (replay
paused) or is gone (killed), with no failed search, and the replica back in rotation by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from test_retriever_service import TENANT, axis, chunk

from ragline.devstack import ServiceProcess, Stack
from ragline.embedded_standby import EmbeddedStandby, start_primary
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

CHECK_INTERVAL = 0.1
MAX_LAG = 1.0


@dataclass
class Replicated:
    """A retriever whose searches may read from `standby`, a streaming standby of its primary."""

    retriever: ServiceProcess
    standby: EmbeddedStandby
    stub: pb_grpc.RetrieverServiceStub


@pytest.fixture(scope="module")
def replicated_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, EmbeddedStandby]]:
    state = tmp_path_factory.mktemp("replicas")
    primary = start_primary(state / "postgres")
    standby = EmbeddedStandby(state / "postgres", state / "standby")
    stack = Stack(
        state=state,
        services=("retriever",),
        free_ports=True,
        env={
            "DATABASE_URL": "",  # the embedded primary started above, adopted by the retriever
            "RETRIEVER_READ_DATABASE_URLS": standby.url,
            "RETRIEVER_READ_MAX_LAG_SECONDS": str(MAX_LAG),
            "RETRIEVER_READ_CHECK_INTERVAL_SECONDS": str(CHECK_INTERVAL),
        },
    )
    try:
        standby.start()
        stack.start()
        yield stack["retriever"], standby
    finally:
        stack.stop()
        standby.stop()
        primary.cleanup()


@pytest.fixture
async def replicated(replicated_stack: tuple[ServiceProcess, EmbeddedStandby]) -> AsyncIterator[Replicated]:
    retriever, standby = replicated_stack
    async with grpc.aio.insecure_channel(retriever.address) as channel:
        yield Replicated(retriever, standby, pb_grpc.RetrieverServiceStub(channel))


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> float:
    """Seconds until `condition` holds, polled every 20 ms; fails the test after `timeout`."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def served(retriever: ServiceProcess, database: str) -> float:
    return retriever.metric("ragline_retriever_searches_total", {"database": database})


def in_rotation(retriever: ServiceProcess) -> bool:
    return retriever.metric("ragline_retriever_read_replica_in_rotation", {"replica": "0"}) == 1


async def standby_generation(standby: EmbeddedStandby, name: str) -> int:
    """The generation of the collection `name` the standby has replayed (-1 before it has the collection)."""
    conn = await asyncpg.connect(standby.url)
    try:
        generation = await conn.fetchval(
            "SELECT generation FROM collections WHERE tenant = $1 AND name = $2", TENANT, name
        )
    finally:
        await conn.close()
    return -1 if generation is None else int(generation)


async def on_standby(standby: EmbeddedStandby, sql: str) -> None:
    conn = await asyncpg.connect(standby.url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def collection_with(
    stub: pb_grpc.RetrieverServiceStub, name: str, *texts: str
) -> common_pb2.Collection:
    """Creates `name` with a document per text (on axis i); the collection as a gateway is told of it."""
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=TENANT, name=name, embedding_model="handmade", dimension=8)
    )
    for i, text in enumerate(texts):
        await upsert(stub, name, f"doc-{i}", text, i)
    reply = await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=name))
    return reply.collection


async def upsert(stub: pb_grpc.RetrieverServiceStub, name: str, document_id: str, text: str, i: int) -> int:
    """Stores one document; the collection's generation after it."""
    reply = await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection=name, document_id=document_id, chunks=[chunk(text, axis(i))]
        )
    )
    return reply.generation


def search_request(
    collection: common_pb2.Collection, i: int, generation: int | None = None
) -> pb.SearchChunksRequest:
    """A vector search of `collection` for axis `i`, as the gateway sends it (generation and creation time)."""
    return pb.SearchChunksRequest(
        tenant=TENANT,
        collection=collection.name,
        query_embedding=axis(i),
        top_k=1,
        mode=common_pb2.SEARCH_MODE_VECTOR,
        min_generation=collection.generation if generation is None else generation,
        collection_create_time=collection.create_time,
    )


async def test_a_replica_that_has_the_generation_serves_the_search(replicated: Replicated) -> None:
    stub, retriever, standby = replicated.stub, replicated.retriever, replicated.standby
    collection = await collection_with(stub, "replica-serves", "alpha", "beta")
    await wait_for(lambda: _at_least(standby, collection.name, collection.generation))
    await wait_for(lambda: _true(in_rotation(retriever)))
    # The first search of a collection locates it on the primary, which then answers it.
    await stub.SearchChunks(search_request(collection, 0))

    replica, primary = served(retriever, "replica"), served(retriever, "primary")
    reply = await stub.SearchChunks(search_request(collection, 1))
    assert [hit.text for hit in reply.hits] == ["beta"]
    assert reply.generation == collection.generation
    assert (served(retriever, "replica"), served(retriever, "primary")) == (replica + 1, primary)

    # Without the collection's creation time the caller's view is unknown: the primary answers.
    unversioned = search_request(collection, 1)
    unversioned.ClearField("collection_create_time")
    await stub.SearchChunks(unversioned)
    assert (served(retriever, "replica"), served(retriever, "primary")) == (replica + 1, primary + 1)


async def test_a_paused_replica_is_not_used_for_a_newer_generation_and_leaves_rotation(
    replicated: Replicated,
) -> None:
    stub, retriever, standby = replicated.stub, replicated.retriever, replicated.standby
    collection = await collection_with(stub, "replica-paused", "alpha")
    await wait_for(lambda: _at_least(standby, collection.name, collection.generation))
    await wait_for(lambda: _true(in_rotation(retriever)))
    await stub.SearchChunks(search_request(collection, 0))  # located

    await on_standby(standby, "SELECT pg_wal_replay_pause()")
    try:
        generation = await upsert(stub, collection.name, "new", "gamma", 3)
        behind = retriever.metric("ragline_retriever_read_replica_fallbacks_total", {"reason": "behind"})
        replica = served(retriever, "replica")
        # Asked right after the write, the replica is still in rotation, but without the new
        # generation: the primary answers, with the new document.
        reply = await stub.SearchChunks(search_request(collection, 3, generation))
        assert [hit.text for hit in reply.hits] == ["gamma"]
        assert reply.generation == generation
        assert served(retriever, "replica") == replica
        assert (
            retriever.metric("ragline_retriever_read_replica_fallbacks_total", {"reason": "behind"}) >= behind
        )

        # The older generation is still the paused replica's to serve, while it is in rotation.
        # Replay paused, the lag grows past the bound: out of rotation.
        await wait_for(lambda: _true(not in_rotation(retriever)), timeout=MAX_LAG + 30)
        assert retriever.metric("ragline_retriever_read_replica_lag_seconds", {"replica": "0"}) > MAX_LAG
        replica = served(retriever, "replica")
        reply = await stub.SearchChunks(search_request(collection, 0))
        assert [hit.text for hit in reply.hits] == ["alpha"]
        assert served(retriever, "replica") == replica
    finally:
        await on_standby(standby, "SELECT pg_wal_replay_resume()")
    await wait_for(lambda: _true(in_rotation(retriever)))
    replica = served(retriever, "replica")
    reply = await stub.SearchChunks(search_request(collection, 3, generation))
    assert [hit.text for hit in reply.hits] == ["gamma"]
    assert served(retriever, "replica") == replica + 1


async def test_a_killed_standby_costs_no_search_and_rejoins_when_restarted(replicated: Replicated) -> None:
    stub, retriever, standby = replicated.stub, replicated.retriever, replicated.standby
    collection = await collection_with(stub, "replica-killed", "alpha", "beta")
    await wait_for(lambda: _at_least(standby, collection.name, collection.generation))
    await wait_for(lambda: _true(in_rotation(retriever)))
    failures: list[BaseException] = []
    searches = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal searches
        while not stop.is_set():
            try:
                reply = await stub.SearchChunks(search_request(collection, searches % 2), timeout=30)
                assert [hit.text for hit in reply.hits] == [["alpha", "beta"][searches % 2]]
            except (grpc.aio.AioRpcError, AssertionError) as exc:
                failures.append(exc)
            searches += 1

    task = asyncio.create_task(load())
    try:
        await wait_for(lambda: _true(served(retriever, "replica") > 0 and searches > 20))
        await asyncio.to_thread(standby.kill)
        killed_at = searches
        await wait_for(lambda: _true(not in_rotation(retriever)))
        await wait_for(lambda: _true(searches > killed_at + 20))
        primary = served(retriever, "primary")
        await wait_for(lambda: _true(served(retriever, "primary") > primary + 20))

        await asyncio.to_thread(standby.start)
        await wait_for(lambda: _true(in_rotation(retriever)))
        replica = served(retriever, "replica")
        await wait_for(lambda: _true(served(retriever, "replica") > replica + 5))
    finally:
        stop.set()
        await task
    assert failures == []


async def _at_least(standby: EmbeddedStandby, name: str, generation: int) -> bool:
    return await standby_generation(standby, name) >= generation


async def _true(value: bool) -> bool:
    return value
