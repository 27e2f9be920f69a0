"""Read-your-writes through the gateway with a read replica: the whole stack with a streaming standby
of its PostgreSQL (`Stack(pg_standby=True)`), whose replay the tests pause so that the replica is
behind for sure. A search after an ingest sees the ingest, and after a collection is deleted and
created again, it sees only the new collection's documents, while the replica still holds the old."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.embedded_standby import EmbeddedStandby

pytestmark = pytest.mark.integration
COLLECTION = "replicated"


@pytest.fixture(scope="module")
def replica_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "REDIS_URL": "",
        "DATABASE_URL": "",
        # A paused replica stays in rotation through the test: the searches themselves must notice it is behind.
        "RETRIEVER_READ_MAX_LAG_SECONDS": "600",
        "RETRIEVER_READ_CHECK_INTERVAL_SECONDS": "0.1",
    }
    # No generator: Search does not use it.
    services = ("embedder", "retriever", "gateway")
    stack = Stack(
        state=tmp_path_factory.mktemp("replica-stack"),
        services=services,
        free_ports=True,
        env=env,
        pg_standby=True,
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def replica_client(replica_stack: Stack) -> AsyncIterator[RaglineClient]:
    async with RaglineClient(
        replica_stack["gateway"].address, timeout=120, api_key=replica_stack.api_key
    ) as client:
        yield client


async def set_replay(standby: EmbeddedStandby, paused: bool) -> None:
    conn = await asyncpg.connect(standby.url)
    try:
        await conn.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")
    finally:
        await conn.close()


async def ingest(client: RaglineClient, name: str, text: str) -> None:
    await client.ingest([DocumentToIngest(name, text.encode())], collection=COLLECTION)


async def found(client: RaglineClient, query: str) -> list[str]:
    reply = await client.search(query, collection=COLLECTION, top_k=10)
    return [hit.document_id for hit in reply.hits]


def served(stack: Stack, database: str) -> float:
    return stack["retriever"].metric("ragline_retriever_searches_total", {"database": database})


async def test_a_search_after_a_write_sees_it_although_the_replica_is_behind(
    replica_stack: Stack, replica_client: RaglineClient
) -> None:
    standby = replica_stack.standby
    assert standby is not None
    await ingest(replica_client, "harbour.txt", "The old harbour has a red lighthouse and fishing boats.")
    await found(replica_client, "harbour lighthouse")  # the collection is located and cached

    await set_replay(standby, paused=True)
    try:
        behind = replica_stack["retriever"].metric(
            "ragline_retriever_read_replica_fallbacks_total", {"reason": "behind"}
        )
        for i in range(3):
            await ingest(
                replica_client, f"keeper-{i}.txt", f"Keeper number {i} polished the lighthouse lamp."
            )
            assert f"keeper-{i}.txt" in await found(replica_client, f"keeper number {i} lamp")
        # The replica was asked and was behind each time: the primary answered.
        assert (
            replica_stack["retriever"].metric(
                "ragline_retriever_read_replica_fallbacks_total", {"reason": "behind"}
            )
            >= behind + 3
        )

        # Deleted and created again: the paused replica still holds the old collection, at a higher
        # generation than the new one's; its creation time tells them apart.
        await replica_client.delete_collection(COLLECTION)
        await ingest(
            replica_client, "orchard.txt", "The orchard grows apples and pears behind the lighthouse."
        )
        assert await found(replica_client, "lighthouse apples keeper") == ["orchard.txt"]
    finally:
        await set_replay(standby, paused=False)

    # Replayed, the replica answers searches again, and sees what the primary sees.
    replica = served(replica_stack, "replica")
    deadline = time.monotonic() + 60
    while served(replica_stack, "replica") == replica:
        assert time.monotonic() < deadline, "the replica never answered a search after replay resumed"
        assert await found(replica_client, f"orchard apples {time.monotonic()}") == ["orchard.txt"]
        await asyncio.sleep(0.05)
