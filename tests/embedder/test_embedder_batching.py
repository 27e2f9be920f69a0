"""Unit tests of micro-batching, the cache and bad input, in-process.

The batcher is driven with an encoder that records its batches and can be held, so that the
tests decide exactly which calls are waiting when a batch forms.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.typing import NDArray

from ragline.config import load_config
from ragline.embedded_redis import EmbeddedRedis
from ragline.errors import InvalidArgument, ResourceExhausted
from ragline.v1 import embedder_service_pb2 as pb
from ragline_embedder.backends import LocalBackend
from ragline_embedder.batching import MicroBatcher
from ragline_embedder.cache import EmbeddingCache
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.service import EmbedderServicer
from ragline_embedder.wire import first_invalid_string


class RecordingEncoder:
    """Encodes a text as [len(text), 1]; records each batch; `hold` keeps the model busy until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.hold.wait(10)
        self.batches.append(list(texts))
        return np.array([[len(text), 1.0] for text in texts], dtype=np.float32)


@pytest.fixture
async def batcher() -> AsyncIterator[tuple[MicroBatcher, RecordingEncoder]]:
    encoder = RecordingEncoder()
    with ThreadPoolExecutor(max_workers=1) as thread:
        batcher = MicroBatcher(encoder, thread, batch_tokens=100, max_wait_seconds=0.005, max_queue=20)
        batcher.start()
        yield batcher, encoder
        encoder.hold.set()
        await batcher.stop()


async def test_concurrent_calls_share_a_batch_and_keep_their_order(
    batcher: tuple[MicroBatcher, RecordingEncoder],
) -> None:
    batch, encoder = batcher
    calls = [["ccc", "a"], ["bb"], ["dddd", "e", "ff"]]
    results = await asyncio.gather(
        *(batch.embed(texts, [len(t) for t in texts], urgent=False) for texts in calls)
    )
    assert encoder.batches == [["a", "e", "bb", "ff", "ccc", "dddd"]]  # one batch, sorted by length
    for texts, vectors in zip(calls, results, strict=True):
        assert vectors[:, 0].tolist() == [len(t) for t in texts]


async def test_batches_respect_the_token_budget_and_queries_go_first(
    batcher: tuple[MicroBatcher, RecordingEncoder],
) -> None:
    batch, encoder = batcher
    encoder.hold.clear()
    first = asyncio.create_task(batch.embed(["x"], [1], urgent=False))
    await asyncio.sleep(0.05)  # The model is now busy with "x"; the next calls queue up behind it.
    passages = asyncio.create_task(batch.embed(["p1", "p2", "p3"], [40, 40, 40], urgent=False))
    query = asyncio.create_task(batch.embed(["q"], [5], urgent=True))
    await asyncio.sleep(0.05)
    encoder.hold.set()
    await asyncio.gather(first, passages, query)
    assert encoder.batches == [["x"], ["q"], ["p1", "p2"], ["p3"]]


async def test_a_full_queue_refuses_at_once(batcher: tuple[MicroBatcher, RecordingEncoder]) -> None:
    batch, encoder = batcher
    encoder.hold.clear()
    waiting = asyncio.create_task(batch.embed(["t"] * 15, [1] * 15, urgent=False))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(batch.embed(["u"] * 15, [1] * 15, urgent=False))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted, match="EMBEDDER_MAX_QUEUE=20") as raised:
        await batch.embed(["v"] * 6, [1] * 6, urgent=False)
    assert raised.value.retry_after is not None
    encoder.hold.set()
    await asyncio.gather(waiting, queued)


async def test_a_cancelled_call_is_skipped(batcher: tuple[MicroBatcher, RecordingEncoder]) -> None:
    batch, encoder = batcher
    encoder.hold.clear()
    busy = asyncio.create_task(batch.embed(["x"], [1], urgent=False))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(batch.embed(["abandoned"], [1], urgent=False))
    kept = asyncio.create_task(batch.embed(["kept"], [1], urgent=False))
    await asyncio.sleep(0.01)
    gone.cancel()
    encoder.hold.set()
    await asyncio.gather(busy, kept)
    assert encoder.batches == [["x"], ["kept"]]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"))
    try:
        yield server.start()
    finally:
        server.stop()


async def test_cache_round_trip_is_keyed_by_model_and_exact_text(redis_url: str) -> None:
    cache = EmbeddingCache(redis_url, namespace="local:m:2", dimension=2, ttl_seconds=60, timeout_seconds=1)
    other = EmbeddingCache(redis_url, namespace="local:m2:2", dimension=2, ttl_seconds=60, timeout_seconds=1)
    try:
        keys = cache.keys(["alpha", "beta"])
        await cache.put(keys, np.array([[1, 0], [0, 1]], dtype=np.float32))
        found = await cache.get(cache.keys(["beta", "gamma", "alpha"]))
        assert [None if v is None else v.tolist() for v in found] == [[0, 1], None, [1, 0]]
        assert await other.get(other.keys(["alpha"])) == [None]
    finally:
        await cache.close()
        await other.close()


async def test_a_down_cache_is_a_miss_not_an_error() -> None:
    cache = EmbeddingCache(
        "redis://127.0.0.1:9/0", namespace="n", dimension=2, ttl_seconds=60, timeout_seconds=0.2
    )
    try:
        assert await cache.get(cache.keys(["alpha"])) == [None]
        await cache.put(cache.keys(["alpha"]), np.zeros((1, 2), dtype=np.float32))
    finally:
        await cache.close()


async def test_overlong_texts_are_rejected_by_index_when_configured(backend: LocalBackend) -> None:
    config = load_config(EmbedderConfig, environ={"EMBEDDER_OVERLONG_POLICY": "reject"})
    servicer = EmbedderServicer(config, lambda: backend)
    await servicer.start()
    try:
        with pytest.raises(InvalidArgument, match=r"texts\[1\] has 602 tokens") as raised:
            await servicer.Embed(pb.EmbedRequest(texts=["fine", "drag " * 600]), None)  # type: ignore[arg-type]
        assert raised.value.field == "texts[1]"
    finally:
        await servicer.stop()


def test_the_invalid_utf8_text_is_found_by_index() -> None:
    good = pb.EmbedRequest(texts=["a", "b"], input_type=pb.INPUT_TYPE_QUERY).SerializeToString()
    bad = good + b"\x0a\x02\xff\xfe"  # a third text of two bytes that are not UTF-8
    assert first_invalid_string(good, pb.EmbedRequest.DESCRIPTOR) is None
    assert first_invalid_string(bad, pb.EmbedRequest.DESCRIPTOR) == "texts[2]"
    rerank = pb.RerankRequest(passages=["p"]).SerializeToString() + b"\x0a\x01\xc3"
    assert first_invalid_string(rerank, pb.RerankRequest.DESCRIPTOR) == "query"
