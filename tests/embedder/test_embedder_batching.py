"""Unit tests of micro-batching, the cache and bad input, in-process.

The batcher is driven with an encoder that records its batches and can be held, so that the
tests decide exactly which calls are waiting when a batch forms.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.typing import NDArray

from ragline.config import load_config
from ragline.embedded_redis import EmbeddedRedis
from ragline.errors import InvalidArgument, ResourceExhausted, Unavailable
from ragline.v1 import embedder_service_pb2 as pb
from ragline_embedder.backends import EmbeddingBackend, forward_passes
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


async def test_a_query_waits_for_one_passage_pass_at_most(
    batcher: tuple[MicroBatcher, RecordingEncoder],
) -> None:
    """Passages queued before a query run as passes of the token budget; the query goes after the current one."""
    batch, encoder = batcher
    encoder.hold.clear()
    # Six passages of 40 tokens: passes of two (80 padded tokens; three would be 120 > 100).
    passages = asyncio.create_task(batch.embed([f"p{i}" for i in range(6)], [40] * 6, urgent=False))
    await asyncio.sleep(0.05)  # The model now holds the first pass.
    query = asyncio.create_task(batch.embed(["q"], [5], urgent=True))
    await asyncio.sleep(0.05)
    encoder.hold.set()
    await asyncio.gather(passages, query)
    assert encoder.batches == [["p0", "p1"], ["q"], ["p2", "p3"], ["p4", "p5"]]


async def test_a_round_is_sorted_by_length_into_passes_that_pad_little(
    batcher: tuple[MicroBatcher, RecordingEncoder],
) -> None:
    batch, encoder = batcher
    encoder.hold.clear()
    busy = asyncio.create_task(batch.embed(["x"], [1], urgent=False))
    await asyncio.sleep(0.05)
    # Arrival order alternates long and short; the passes group them: 2 longs (100), then 5 shorts (50).
    texts = ["L1", "s1", "L2", "s2", "s3", "s4", "s5"]
    tokens = [50, 10, 50, 10, 10, 10, 10]
    passages = asyncio.create_task(batch.embed(texts, tokens, urgent=False))
    await asyncio.sleep(0.05)
    encoder.hold.set()
    await asyncio.gather(busy, passages)
    assert encoder.batches == [["x"], ["s1", "s2", "s3", "s4", "s5"], ["L1", "L2"]]
    assert passages.result()[:, 0].tolist() == [len(t) for t in texts]


async def test_passes_hold_at_most_the_batch_size() -> None:
    encoder = RecordingEncoder()
    with ThreadPoolExecutor(max_workers=1) as thread:
        batcher = MicroBatcher(
            encoder, thread, batch_tokens=1000, batch_size=3, max_wait_seconds=0.005, max_queue=20
        )
        batcher.start()
        await batcher.embed([f"t{i}" for i in range(7)], [1] * 7, urgent=False)
        await batcher.stop()
    assert [len(b) for b in encoder.batches] == [3, 3, 1]


async def test_queries_run_on_the_query_encoder_while_no_passage_waits() -> None:
    passages, queries = RecordingEncoder(), RecordingEncoder()
    with ThreadPoolExecutor(max_workers=1) as thread:
        batcher = MicroBatcher(
            passages, thread, encode_queries=queries, batch_tokens=100, max_wait_seconds=0.005, max_queue=20
        )
        batcher.start()
        await batcher.embed(["q1"], [1], urgent=True)
        passages.hold.clear()
        busy = asyncio.create_task(batcher.embed(["p1"], [1], urgent=False))
        await asyncio.sleep(0.05)
        later = asyncio.create_task(batcher.embed(["p2", "p3"], [1, 1], urgent=False))
        query = asyncio.create_task(batcher.embed(["q2"], [1], urgent=True))
        await asyncio.sleep(0.01)
        passages.hold.set()
        await asyncio.gather(busy, later, query)
        await batcher.stop()
    # q2 came while passages waited: it ran first, but on the passage encoder, which leaves them the CPU.
    assert queries.batches == [["q1"]]
    assert passages.batches == [["p1"], ["q2"], ["p2", "p3"]]


class ThreadRecordingEncoder(RecordingEncoder):
    """Also records the thread each batch ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.threads.append(threading.get_ident())
        return super().__call__(texts)


def _started_inline_batcher(
    passages: Callable[[Sequence[str]], NDArray[np.float32]],
    thread: ThreadPoolExecutor,
    queries: Callable[[Sequence[str]], NDArray[np.float32]],
) -> MicroBatcher:
    """A started batcher whose lone queries run on the event loop (`inline_queries`), with small limits."""
    batcher = MicroBatcher(
        passages,
        thread,
        encode_queries=queries,
        batch_tokens=100,
        max_wait_seconds=0.005,
        max_queue=20,
        inline_queries=True,
    )
    batcher.start()
    return batcher


async def test_a_lone_query_runs_on_the_event_loop_without_a_hand_off() -> None:
    """With `inline_queries`, a query with nothing else waiting is embedded in the loop's own thread (no
    hand-off to the model thread and back); queries while passages wait, and passages, still go to the thread."""
    passages, queries = ThreadRecordingEncoder(), ThreadRecordingEncoder()
    loop_thread = threading.get_ident()
    with ThreadPoolExecutor(max_workers=1) as thread:
        model_thread = thread.submit(threading.get_ident).result()
        batcher = _started_inline_batcher(passages, thread, queries)
        lone = await batcher.embed(["q1"], [1], urgent=True)
        passages.hold.clear()
        busy = asyncio.create_task(batcher.embed(["p1"], [1], urgent=False))
        await asyncio.sleep(0.05)
        later = asyncio.create_task(batcher.embed(["p2"], [1], urgent=False))
        query = asyncio.create_task(batcher.embed(["q2"], [1], urgent=True))
        await asyncio.sleep(0.01)
        passages.hold.set()
        await asyncio.gather(busy, later, query)
        await batcher.stop()
    assert lone[:, 0].tolist() == [2.0]
    assert queries.batches == [["q1"]] and queries.threads == [loop_thread]
    assert passages.batches == [["p1"], ["q2"], ["p2"]]
    assert passages.threads == [model_thread] * 3


class SlowThreadRecordingEncoder(ThreadRecordingEncoder):
    """Takes 20 ms a pass, so that "right after a pass" and "idle longer than a pass" are far apart."""

    def __call__(self, texts: Sequence[str]) -> NDArray[np.float32]:
        time.sleep(0.02)
        return super().__call__(texts)


async def test_a_query_right_after_a_pass_goes_to_the_thread_so_that_arrivals_can_merge() -> None:
    """Inline, the loop cannot read calls during the pass, so back-to-back queries would each run alone;
    a query arriving sooner after the last pass than that pass took runs in the model thread."""
    queries = SlowThreadRecordingEncoder()
    loop_thread = threading.get_ident()
    with ThreadPoolExecutor(max_workers=1) as thread:
        model_thread = thread.submit(threading.get_ident).result()
        batcher = _started_inline_batcher(RecordingEncoder(), thread, queries)
        await batcher.embed(["q1"], [1], urgent=True)
        await batcher.embed(["q2"], [1], urgent=True)
        await asyncio.sleep(0.1)
        await batcher.embed(["q3"], [1], urgent=True)
        await batcher.stop()
    assert queries.batches == [["q1"], ["q2"], ["q3"]]
    assert queries.threads == [loop_thread, model_thread, loop_thread]


async def test_an_inline_query_that_fails_fails_its_call_only() -> None:
    def broken(texts: Sequence[str]) -> NDArray[np.float32]:
        raise RuntimeError("the model broke")

    with ThreadPoolExecutor(max_workers=1) as thread:
        batcher = _started_inline_batcher(RecordingEncoder(), thread, broken)
        with pytest.raises(RuntimeError, match="the model broke"):
            await batcher.embed(["q"], [1], urgent=True)
        passage = await batcher.embed(["p"], [1], urgent=False)
        await batcher.stop()
    assert passage[:, 0].tolist() == [1.0]


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


async def test_a_caller_cancelled_mid_round_leaves_the_batcher_serving(
    batcher: tuple[MicroBatcher, RecordingEncoder],
) -> None:
    """Its texts in the round's later passes once stayed counted, and the worker spun on an empty queue."""
    batch, encoder = batcher
    encoder.hold.clear()
    # Six passages of 40 tokens: three passes of two; the caller goes while the first runs.
    gone = asyncio.create_task(batch.embed([f"p{i}" for i in range(6)], [40] * 6, urgent=False))
    await asyncio.sleep(0.05)
    gone.cancel()
    encoder.hold.set()
    await asyncio.sleep(0.05)

    later = await asyncio.wait_for(batch.embed(["after"], [1], urgent=True), timeout=5)

    assert later[:, 0].tolist() == [5.0]
    assert encoder.batches == [["p0", "p1"], ["after"]]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.integration
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


async def test_overlong_texts_are_rejected_by_index_when_configured(backend: EmbeddingBackend) -> None:
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


def test_forward_passes_group_by_length_within_both_limits() -> None:
    lengths = [50, 10, 300, 12, 48, 11]
    # Budget 100 padded tokens, 3 texts: the three shortest, then the two near 50, then 300 alone.
    assert forward_passes(lengths, batch_size=3, batch_tokens=100) == [[1, 5, 3], [4, 0], [2]]
    assert forward_passes(lengths, batch_size=2, batch_tokens=10_000) == [[1, 5], [3, 4], [0, 2]]
    assert forward_passes([], batch_size=2, batch_tokens=100) == []


def test_the_default_batch_budget_depends_on_the_backend() -> None:
    assert load_config(EmbedderConfig, environ={}).model_batch_tokens() == 256
    torch = load_config(EmbedderConfig, environ={"EMBEDDER_LOCAL_RUNTIME": "torch"})
    assert torch.model_batch_tokens() == 1024
    assert load_config(EmbedderConfig, environ={"EMBEDDER_BACKEND": "openai"}).model_batch_tokens() == 2048
    assert load_config(EmbedderConfig, environ={"EMBEDDER_BATCH_TOKENS": "64"}).model_batch_tokens() == 64


async def test_stopping_fails_the_pass_in_progress_and_the_queue() -> None:
    encoder = RecordingEncoder()
    encoder.hold.clear()
    with ThreadPoolExecutor(max_workers=1) as thread:
        batcher = MicroBatcher(encoder, thread, batch_tokens=100, max_wait_seconds=0.005, max_queue=20)
        batcher.start()
        running = asyncio.create_task(batcher.embed(["x"], [1], urgent=False))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(batcher.embed(["y"], [1], urgent=True))
        await asyncio.sleep(0.01)
        await batcher.stop()
        encoder.hold.set()
    for task in (running, queued):
        with pytest.raises(Unavailable, match="shutting down"):
            await task
    with pytest.raises(Unavailable, match="not running"):
        await batcher.embed(["z"], [1], urgent=False)
