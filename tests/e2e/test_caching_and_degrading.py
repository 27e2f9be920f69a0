"""The gateway's caches are fast and never stale, and the gateway degrades instead of failing.

Runs against the same real stack as the other end-to-end tests, in a collection of its own.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
import pytest
from rerank_server import RerankServer, overlap

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration
COLLECTION = "cache-test"
# The retriever's default RETRIEVER_STATE_LEASE_SECONDS, which the stack keeps.
STATE_LEASE_SECONDS = 0.5


@pytest.fixture(scope="module")
async def kites(client: RaglineClient) -> None:
    await client.ingest(
        [
            DocumentToIngest(
                "kites.txt", b"The largest kite festival in the world is held every April in Weifang."
            ),
            DocumentToIngest(
                "tea.txt", b"Green tea is made from leaves that are steamed or pan-fired soon after picking."
            ),
        ],
        collection=COLLECTION,
    )


async def test_a_repeated_question_is_answered_from_the_cache(client: RaglineClient, kites: None) -> None:
    first = await client.ask("Where is the largest kite festival held?", collection=COLLECTION, max_tokens=48)
    assert first.cache_layer in (gw.CACHE_LAYER_NONE, gw.CACHE_LAYER_EMBEDDING)
    assert "generate" in [t.stage for t in first.stage_timings]
    again = await client.ask("Where is the largest kite festival held?", collection=COLLECTION, max_tokens=48)
    assert again.cache_layer == gw.CACHE_LAYER_ANSWER
    assert again.answer == first.answer
    assert "generate" not in [t.stage for t in again.stage_timings]
    generated = next(t.duration_seconds for t in first.stage_timings if t.stage == "generate")
    assert 0 < again.duration_seconds < generated <= first.duration_seconds


async def test_a_paraphrased_question_is_a_semantic_hit(client: RaglineClient, kites: None) -> None:
    first = await client.ask("How is green tea made?", collection=COLLECTION, max_tokens=48)
    paraphrase = await client.ask("How is green tea produced?", collection=COLLECTION, max_tokens=48)
    assert paraphrase.cache_layer == gw.CACHE_LAYER_SEMANTIC
    assert paraphrase.answer == first.answer
    unrelated = await client.ask("Who picks the tea leaves?", collection=COLLECTION, max_tokens=48)
    assert unrelated.cache_layer not in (gw.CACHE_LAYER_SEMANTIC, gw.CACHE_LAYER_ANSWER)


async def test_reingesting_the_cited_document_invalidates_the_cache(
    client: RaglineClient, kites: None
) -> None:
    question = "When is the kite festival held?"
    before = await client.ask(question, collection=COLLECTION, max_tokens=48)
    assert (
        await client.ask(question, collection=COLLECTION, max_tokens=48)
    ).cache_layer == gw.CACHE_LAYER_ANSWER
    await client.ingest(
        [
            DocumentToIngest(
                "kites.txt", b"The largest kite festival in the world is held every September in Dieppe."
            )
        ],
        collection=COLLECTION,
    )
    after = await client.ask(question, collection=COLLECTION, max_tokens=48)
    assert after.generation > before.generation
    assert after.cache_layer not in (gw.CACHE_LAYER_ANSWER, gw.CACHE_LAYER_SEMANTIC, gw.CACHE_LAYER_RETRIEVAL)
    search = await client.search("kite festival", collection=COLLECTION, top_k=1)
    assert "Dieppe" in search.hits[0].text
    assert search.cache_layer != gw.CACHE_LAYER_RETRIEVAL or search.generation == after.generation


async def test_search_is_served_from_the_retrieval_cache_and_can_bypass_it(
    client: RaglineClient, kites: None
) -> None:
    cold = await client.search("steamed leaves", collection=COLLECTION)
    warm = await client.search("steamed leaves", collection=COLLECTION)
    assert warm.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    assert [h.chunk_id for h in warm.hits] == [h.chunk_id for h in cold.hits]
    bypass = await client.search("steamed leaves", collection=COLLECTION, cache_policy=gw.CACHE_POLICY_BYPASS)
    assert bypass.cache_layer == gw.CACHE_LAYER_UNSPECIFIED
    assert bypass.rerank_status in (gw.RERANK_STATUS_SKIPPED, gw.RERANK_STATUS_APPLIED)


async def test_ask_stream_sends_passages_then_deltas_then_the_answer(
    client: RaglineClient, kites: None
) -> None:
    events = [
        e
        async for e in client.ask_stream("What is green tea made from?", collection=COLLECTION, max_tokens=32)
    ]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "passages" and kinds[-1] == "final"
    assert set(kinds[1:-1]) == {"delta"}
    assert "".join(e.delta for e in events[1:-1]) == events[-1].final.answer
    assert events[0].passages.hits[0].document_id == "tea.txt"


async def test_a_too_short_deadline_gives_deadline_exceeded_not_a_hang(
    client: RaglineClient, kites: None
) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.ask(
            "Describe green tea production in great detail.",
            collection=COLLECTION,
            max_tokens=512,
            cache_policy=gw.CACHE_POLICY_BYPASS,
            timeout=1.0,
        )
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3.0


async def test_ask_keeps_answering_while_redis_is_down(
    stack: Stack, client: RaglineClient, kites: None
) -> None:
    assert stack.redis is not None
    stack.redis.stop()
    try:
        started = time.monotonic()
        reply = await client.ask("What is the largest kite festival?", collection=COLLECTION, max_tokens=24)
        assert reply.answer
        assert reply.cache_layer == gw.CACHE_LAYER_UNSPECIFIED
        search = await client.search("kite festival", collection=COLLECTION)
        assert search.hits
        # Ingesting goes on too: the retriever, unable to withdraw the published state, waits out its lease.
        await client.ingest(
            [DocumentToIngest("outage.txt", b"Box kites were flown during the cache outage.")],
            collection=COLLECTION,
        )
        found = await client.search("box kites during the outage", collection=COLLECTION, top_k=1)
        assert found.hits[0].document_id == "outage.txt"
        assert time.monotonic() - started < 60
        metrics = _metrics(stack, "gateway")
        assert 'ragline_gateway_cache_lookups_total{layer="answer",outcome="error"}' in metrics
        assert 'ragline_retriever_state_announcements_total{outcome="failed"}' in _metrics(stack, "retriever")
    finally:
        stack.redis.start()
    # The readiness probe notices Redis within about 2 s and turns the cache back on.
    deadline = time.monotonic() + 20
    layer = gw.CACHE_LAYER_UNSPECIFIED
    while layer != gw.CACHE_LAYER_RETRIEVAL and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        layer = (await client.search("kite festival", collection=COLLECTION)).cache_layer
    assert layer == gw.CACHE_LAYER_RETRIEVAL
    await client.delete_document("outage.txt", collection=COLLECTION)


async def test_with_the_generator_down_ask_is_unavailable_and_search_works(
    stack: Stack, client: RaglineClient, kites: None
) -> None:
    generator = stack["generator"]
    generator.stop()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            # A question the documents answer: an unanswerable one is "not found" without the generator.
            await client.ask(
                "Where is the largest kite festival held?",
                collection=COLLECTION,
                cache_policy=gw.CACHE_POLICY_BYPASS,
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "generator" in (raised.value.details() or "")
        search = await client.search("kites", collection=COLLECTION, cache_policy=gw.CACHE_POLICY_BYPASS)
        assert search.hits
    finally:
        generator.start()
        generator.wait_healthy(120)


def _metrics(stack: Stack, name: str) -> str:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{stack[name].metrics_port}/metrics", timeout=5
    ) as response:
        return str(response.read().decode())


async def test_candidates_are_reranked_and_a_failing_reranker_degrades(
    client: RaglineClient, kites: None, reranker: RerankServer
) -> None:
    query = "green tea leaves steamed"
    reranked = await client.search(query, collection=COLLECTION, top_k=2, cache_policy=gw.CACHE_POLICY_BYPASS)
    assert reranked.rerank_status == gw.RERANK_STATUS_APPLIED
    assert reranked.hits[0].document_id == "tea.txt"
    assert reranked.hits[0].score == pytest.approx(overlap(query, reranked.hits[0].text))
    assert "rerank" in [t.stage for t in reranked.stage_timings]
    reranker.stop()
    try:
        degraded = await client.search(
            query, collection=COLLECTION, top_k=2, cache_policy=gw.CACHE_POLICY_BYPASS
        )
        assert degraded.rerank_status == gw.RERANK_STATUS_FAILED
        assert degraded.hits[0].document_id == "tea.txt"
    finally:
        reranker.start()


async def test_warm_searches_ask_no_retriever_and_every_ingest_is_seen_at_once(
    stack: Stack, client: RaglineClient
) -> None:
    collection = "published-state"
    await client.ingest(
        [DocumentToIngest("report.txt", b"Kite report 0: the wind kite flew.")], collection=collection
    )
    gateway = stack["gateway"]

    def lookups(source: str) -> float:
        return gateway.metric("ragline_gateway_collection_lookups_total", {"source": source})

    # A lookup (which publishes the state), then the state found beside a lookup, then alone; the
    # retriever publishes nothing for 5 s after Redis failed, as it did in the test before.
    deadline = time.monotonic() + 15
    while True:
        before = lookups("published")
        await client.search("wind kite report", collection=collection)
        if lookups("published") > before:
            break
        assert time.monotonic() < deadline, "the gateway never found the collection's state published"
        await asyncio.sleep(0.2)
    published, looked_up = lookups("published"), lookups("retriever")
    started = time.monotonic()
    for _ in range(5):
        warm = await client.search("wind kite report", collection=collection)
        assert warm.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    elapsed = time.monotonic() - started
    found, asked = lookups("published") - published, lookups("retriever") - looked_up
    assert found + asked == 5
    # A published state lives one lease; the search after it expires asks the retriever, which
    # publishes it again. So a slow machine sees a lookup at most once a lease, and no more.
    assert asked <= int(elapsed / STATE_LEASE_SECONDS) + 1, (found, asked, elapsed)
    assert found >= 1
    # Each Search right after an ingest returns sees the new content, never the cached old one.
    for i in range(1, 6):
        text = f"Kite report {i}: the wind kite flew to {i * 100} metres."
        await client.ingest([DocumentToIngest("report.txt", text.encode())], collection=collection)
        reply = await client.search("wind kite report", collection=collection, top_k=1)
        assert reply.hits[0].text == text
        again = await client.search("wind kite report", collection=collection, top_k=1)
        assert (again.cache_layer, again.hits[0].text) == (gw.CACHE_LAYER_RETRIEVAL, text)
