"""The published collection state is never older than an announced change, on a real (embedded) Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ragline.collection_state import Publication, announce_change, decode_state, state_key
from ragline.embedded_redis import EmbeddedRedis
from ragline.v1 import common_pb2

NAME = "docs"
TENANT = "acme"


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("valkey")))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def client(valkey: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(valkey)
    await client.flushall()
    yield client
    await client.aclose()


def collection(generation: int) -> common_pb2.Collection:
    return common_pb2.Collection(name=NAME, embedding_model="m", dimension=3, generation=generation)


@pytest.mark.integration
async def test_a_state_read_after_its_begin_is_published_for_its_lease(client: aioredis.Redis) -> None:
    publication = Publication(client, TENANT, NAME, lease_seconds=2.0)
    await publication.begin()
    assert await publication.publish(collection(1))
    stored = await client.get(state_key(TENANT, NAME))
    assert stored is not None and decode_state(stored) == collection(1)
    assert 0 < await client.pttl(state_key(TENANT, NAME)) <= 2000


@pytest.mark.integration
async def test_a_change_announced_after_the_begin_stops_the_publication(client: aioredis.Redis) -> None:
    publication = Publication(client, TENANT, NAME, lease_seconds=2.0)
    await publication.begin()
    # The state read now may predate the change: it must not be published.
    await announce_change(client, TENANT, NAME)
    assert not await publication.publish(collection(1))
    assert await client.get(state_key(TENANT, NAME)) is None


@pytest.mark.integration
async def test_an_announced_change_withdraws_the_published_state(client: aioredis.Redis) -> None:
    publication = Publication(client, TENANT, NAME, lease_seconds=2.0)
    await publication.begin()
    assert await publication.publish(collection(1))
    await announce_change(client, TENANT, NAME)
    assert await client.get(state_key(TENANT, NAME)) is None
    # A publication begun after the change publishes again.
    again = Publication(client, TENANT, NAME, lease_seconds=2.0)
    await again.begin()
    assert await again.publish(collection(2))


@pytest.mark.integration
async def test_an_emptied_redis_stops_the_publication(client: aioredis.Redis) -> None:
    publication = Publication(client, TENANT, NAME, lease_seconds=2.0)
    await publication.begin()
    # A restart or eviction loses the epoch; a change may have come and gone meanwhile.
    await client.flushall()
    assert not await publication.publish(collection(1))


@pytest.mark.integration
async def test_the_lease_counts_from_the_begin(client: aioredis.Redis) -> None:
    publication = Publication(client, TENANT, NAME, lease_seconds=0.2)
    await publication.begin()
    await asyncio.sleep(0.1)
    assert await publication.publish(collection(1))
    assert await client.pttl(state_key(TENANT, NAME)) <= 100
    late = Publication(client, TENANT, NAME, lease_seconds=0.2)
    await late.begin()
    await asyncio.sleep(0.25)
    assert not await late.publish(collection(1))


@pytest.mark.integration
async def test_other_collections_are_not_touched(client: aioredis.Redis) -> None:
    other = Publication(client, TENANT, "other", lease_seconds=2.0)
    await other.begin()
    await announce_change(client, TENANT, NAME)
    assert await other.publish(collection(1))


@pytest.mark.integration
async def test_two_tenants_collections_of_one_name_have_separate_states(client: aioredis.Redis) -> None:
    theirs = Publication(client, "globex", NAME, lease_seconds=2.0)
    await theirs.begin()
    assert await theirs.publish(collection(7))
    ours = Publication(client, TENANT, NAME, lease_seconds=2.0)
    await ours.begin()
    assert await ours.publish(collection(1))
    # A change to one tenant's collection withdraws only its own state.
    await announce_change(client, TENANT, NAME)
    assert await client.get(state_key(TENANT, NAME)) is None
    stored = await client.get(state_key("globex", NAME))
    assert stored is not None and decode_state(stored) == collection(7)


def test_state_keys_never_collide_between_tenants() -> None:
    # A tenant may hold '/' or braces; a collection name holds neither.
    keys = {
        state_key("a", "b"),
        state_key("a/b", "c"),
        state_key("a", "b.c"),
        state_key("a}", "b"),
        state_key("{a", "b"),
        state_key("default", "default"),
    }
    assert len(keys) == 6


def test_a_value_that_is_no_state_decodes_to_none() -> None:
    assert decode_state(collection(3).SerializeToString()) == collection(3)
    assert decode_state(b"\xff\xff not a collection") is None
