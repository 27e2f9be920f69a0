"""Dynamic micro-batching: texts from concurrent calls share model batches.

A model embeds 32 texts in far less than 32 times the time of one, so the texts of calls that
arrive together are merged. One worker task feeds the model thread: when the model is idle,
the first passage waits at most `EMBEDDER_BATCH_WAIT_MS` for company (a query does not wait); while the model is busy,
texts accumulate and the next batch takes them at once. A batch holds at most
`EMBEDDER_BATCH_TOKENS` tokens (so one batch never keeps newcomers waiting long), waiting queries
form a batch of their own before any passage (a person waits for a query; passages are
ingestion), and its texts are
sorted by length so the model's forward passes pad little.

The queue is bounded in texts: a call that does not fit fails at once with
RESOURCE_EXHAUSTED, so an overloaded replica sheds load instead of letting latency grow
without limit, and the caller can retry another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter, Gauge, Histogram

from ragline.errors import ResourceExhausted, Unavailable
from ragline.metrics import LATENCY_BUCKETS

QUEUE_DEPTH = Gauge("ragline_embedder_queue_depth", "Texts waiting for the model.")
QUEUE_WAIT = Histogram(
    "ragline_embedder_queue_wait_seconds",
    "Time a text waited in the queue until its model batch started.",
    buckets=LATENCY_BUCKETS,
)
QUEUE_REJECTED = Counter(
    "ragline_embedder_queue_rejected_total", "Embed calls refused at once because the queue was full."
)
BATCH_SIZE = Histogram(
    "ragline_embedder_batch_size",
    "Texts in one model batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_TOKENS = Histogram(
    "ragline_embedder_batch_tokens",
    "Tokens in one model batch.",
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536, 262144),
)
MODEL_SECONDS = Histogram(
    "ragline_embedder_model_seconds", "Time the model took for one batch.", buckets=LATENCY_BUCKETS
)

# What a caller refused for a full queue is told to wait before retrying.
FULL_QUEUE_RETRY_SECONDS = 0.5


@dataclass(eq=False)
class _Call:
    """One caller's texts: the rows gather here until every one is embedded."""

    future: asyncio.Future[NDArray[np.float32]]
    rows: list[NDArray[np.float32] | None]
    remaining: int


@dataclass(eq=False)
class _Item:
    """One text waiting for the model."""

    text: str
    tokens: int
    call: _Call
    row: int
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Merges concurrent `embed` calls into model batches run one at a time on `executor`."""

    def __init__(
        self,
        encode: Callable[[Sequence[str]], NDArray[np.float32]],
        executor: Executor,
        *,
        batch_tokens: int,
        max_wait_seconds: float,
        max_queue: int,
    ) -> None:
        self._encode = encode
        self._executor = executor
        self._batch_tokens = batch_tokens
        self._max_wait = max_wait_seconds
        self._max_queue = max_queue
        self._queries: deque[_Item] = deque()
        self._passages: deque[_Item] = deque()
        self._queued = 0
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the worker task on the running loop."""
        self._worker = asyncio.create_task(self._run(), name="embedder-batcher")

    async def stop(self) -> None:
        """Stops the worker; calls still queued fail with UNAVAILABLE."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        error = Unavailable("the embedder is shutting down; retry on another replica")
        for queue in (self._queries, self._passages):
            while queue:
                future = queue.popleft().call.future
                if not future.done():
                    future.set_exception(error)
        self._queued = 0
        QUEUE_DEPTH.set(0)

    async def embed(
        self, texts: Sequence[str], tokens: Sequence[int], *, urgent: bool
    ) -> NDArray[np.float32]:
        """The vectors of `texts` (token counts `tokens`), in order; `urgent` texts (queries) go first."""
        if self._queued + len(texts) > self._max_queue:
            QUEUE_REJECTED.inc()
            raise ResourceExhausted(
                f"the embedder is overloaded: {self._queued} texts are waiting for the model and this call "
                f"adds {len(texts)} (limit EMBEDDER_MAX_QUEUE={self._max_queue}); retry shortly or elsewhere",
                reason="EMBEDDER_QUEUE_FULL",
                retry_after=FULL_QUEUE_RETRY_SECONDS,
            )
        call = _Call(asyncio.get_running_loop().create_future(), [None] * len(texts), len(texts))
        queue = self._queries if urgent else self._passages
        queue.extend(
            _Item(text, count, call, row) for row, (text, count) in enumerate(zip(texts, tokens, strict=True))
        )
        self._queued += len(texts)
        QUEUE_DEPTH.set(self._queued)
        self._arrived.set()
        # A cancelled caller cancels this future too, and the worker then skips its texts.
        return await call.future

    async def _run(self) -> None:
        while True:
            while not self._queued:
                self._arrived.clear()
                await self._arrived.wait()
            # A query goes to an idle model at once: a person is waiting, and while the model is
            # busy, queries that arrive meanwhile batch together anyway. Passages wait for company.
            if not self._queries:
                delay = self._passages[0].queued_at + self._max_wait - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch = self._take()
            QUEUE_DEPTH.set(self._queued)
            if batch:
                await self._run_batch(batch)

    def _take(self) -> list[_Item]:
        """Takes the next batch within the token budget: waiting queries alone, else passages, in arrival order."""
        batch: list[_Item] = []
        tokens = 0
        for queue in (self._queries, self._passages):
            while queue:
                item = queue[0]
                if item.call.future.done():
                    queue.popleft()
                    self._queued -= 1
                    continue
                if batch and tokens + item.tokens > self._batch_tokens:
                    return batch
                queue.popleft()
                self._queued -= 1
                batch.append(item)
                tokens += item.tokens
            if batch:
                # A query batch carries no passages: it is short, so the person waiting gets an answer soon.
                return batch
        return batch

    async def _run_batch(self, batch: list[_Item]) -> None:
        batch.sort(key=lambda item: item.tokens)
        started = time.perf_counter()
        for item in batch:
            QUEUE_WAIT.observe(started - item.queued_at)
        BATCH_SIZE.observe(len(batch))
        BATCH_TOKENS.observe(sum(item.tokens for item in batch))
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(
                self._executor, self._timed_encode, [item.text for item in batch]
            )
        except Exception as exc:
            for item in batch:
                if not item.call.future.done():
                    item.call.future.set_exception(exc)
            return
        for item, vector in zip(batch, vectors, strict=True):
            call = item.call
            if call.future.done():
                continue
            call.rows[item.row] = vector
            call.remaining -= 1
            if not call.remaining:
                call.future.set_result(np.vstack(call.rows))  # type: ignore[arg-type]

    def _timed_encode(self, texts: list[str]) -> NDArray[np.float32]:
        """Runs in the model thread, so that time queued for the thread is not counted as model time."""
        started = time.perf_counter()
        vectors = self._encode(texts)
        MODEL_SECONDS.observe(time.perf_counter() - started)
        return vectors
