"""With the collection looked up beside the embedding and the cache read, no Search or Ask after an
ingest is served from a cache entry of the content before it, even while other searches keep
filling the cache under the old generation.

Runs against the same real stack as the other end-to-end tests, in a collection of its own.
"""

from __future__ import annotations

import asyncio

import pytest

from ragline.client import DocumentToIngest, RaglineClient
from ragline.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration
COLLECTION = "latency-cache"
QUERY = "lighthouse on the cape"


async def _keep_searching(client: RaglineClient, stop: asyncio.Event) -> int:
    """Searches the same text until told to stop, filling the caches; returns how many searches ran."""
    count = 0
    while not stop.is_set():
        await client.search(QUERY, collection=COLLECTION, top_k=10)
        count += 1
    return count


async def test_searches_after_each_ingest_see_the_new_document(client: RaglineClient) -> None:
    await client.ingest(
        [DocumentToIngest("cape.txt", b"The red lighthouse stands on the northern cape above the harbour.")],
        collection=COLLECTION,
    )
    first = await client.search(QUERY, collection=COLLECTION, top_k=10)
    warm = await client.search(QUERY, collection=COLLECTION, top_k=10)
    assert warm.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    generation = first.generation
    stop = asyncio.Event()
    background = asyncio.ensure_future(_keep_searching(client, stop))
    try:
        for i in range(3):
            await client.ingest(
                [DocumentToIngest(f"keeper-{i}.txt", f"Lighthouse keeper {i} lived on the cape.".encode())],
                collection=COLLECTION,
            )
            # Every search that starts after the ingest returned sees the new document, the first one
            # (whose early cache read under the old generation may well hit) and the cached ones alike.
            for _ in range(3):
                reply = await client.search(QUERY, collection=COLLECTION, top_k=10)
                assert reply.generation > generation
                assert f"keeper-{i}.txt" in [hit.document_id for hit in reply.hits]
            generation = reply.generation
    finally:
        stop.set()
        searched = await background
    assert searched > 0
    assert (
        await client.search(QUERY, collection=COLLECTION, top_k=10)
    ).cache_layer == gw.CACHE_LAYER_RETRIEVAL


async def test_an_ask_after_an_ingest_is_not_the_cached_answer(client: RaglineClient) -> None:
    question = "What stands on the southern cape?"
    await client.ingest(
        [DocumentToIngest("south.txt", b"A white radio mast stands on the southern cape.")],
        collection=COLLECTION,
    )
    before = await client.ask(question, collection=COLLECTION, max_tokens=24)
    assert (
        await client.ask(question, collection=COLLECTION, max_tokens=24)
    ).cache_layer == gw.CACHE_LAYER_ANSWER
    await client.ingest(
        [DocumentToIngest("south.txt", b"A stone windmill stands on the southern cape.")],
        collection=COLLECTION,
    )
    after = await client.ask(question, collection=COLLECTION, max_tokens=24)
    assert after.generation > before.generation
    assert after.cache_layer not in (gw.CACHE_LAYER_ANSWER, gw.CACHE_LAYER_SEMANTIC, gw.CACHE_LAYER_RETRIEVAL)
    again = await client.ask(question, collection=COLLECTION, max_tokens=24)
    assert again.cache_layer == gw.CACHE_LAYER_ANSWER
    assert again.generation == after.generation
