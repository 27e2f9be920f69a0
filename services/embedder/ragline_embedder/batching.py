"""Dynamic micro-batching: texts from concurrent calls share forward passes, and queries go first.

A model embeds several texts in less time than it embeds them one by one, and far less if
texts of similar length share a forward pass (padding is wasted work). So the texts of calls
that arrive together are merged, in two lanes:

- **Queries** (a person is waiting): all waiting queries form the next forward pass, ahead of
  any passage. When the model is idle a query starts at once. While no passage waits, query
  passes run on the backend's `encode_queries`, which may spend more CPU to answer sooner
  (onnxruntime: threads that spin); with passages waiting that CPU is theirs, so queries run on
  `encode` (measured under 16 clients: the query encoder made passages 0.64 instead of 0.79 of
  the raw model, and queries slower, 39 instead of 23 ms at p50). With `inline_queries` such
  a pass runs on the event loop itself rather than in the model thread: a lone query then
  costs no hand-off to that thread and back (two thread wake-ups, each a wait for a core on a
  busy machine), and the loop pauses for one short pass only. Only a *lone* query runs inline:
  one arriving after the model sat idle at least as long as its last pass took. Back-to-back
  queries go to the thread, because the loop must stay free to read the calls arriving during
  a pass so that they share the next one (inline, each would be read and run alone: 24
  concurrent calls took 24 passes).
- **Passages** (ingestion): the worker takes a *round* of the oldest waiting passages (at most
  `ROUND_TEXTS`), sorts it by length, and runs it as forward passes of similar lengths. Before
  each pass it looks at the query lane first, so a query waits behind at most one passage pass,
  never behind the rest of the round or the queue. When the model is idle the first passage
  waits at most `EMBEDDER_BATCH_WAIT_MS` for company.

A forward pass holds at most `EMBEDDER_BATCH_SIZE` texts and `EMBEDDER_BATCH_TOKENS` padded
tokens (texts times the longest one; a text alone may exceed it), which bounds how long it
keeps a query waiting.

The queue is bounded in texts: a call that does not fit fails at once with
RESOURCE_EXHAUSTED, so an overloaded replica sheds load instead of letting latency grow
without limit, and the caller can retry another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from opentelemetry.trace import Link, Span
from prometheus_client import Counter, Gauge, Histogram

from ragline import tracing
from ragline.errors import ResourceExhausted, Unavailable
from ragline.metrics import LATENCY_BUCKETS
from ragline_embedder.backends import forward_passes

log = logging.getLogger(__name__)

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
# Most passages sorted by length together: more pad less, but the round's oldest call waits for more of it.
ROUND_TEXTS = 128


@dataclass(eq=False)
class _Call:
    """One caller's texts: the rows gather here until every one is embedded."""

    future: asyncio.Future[NDArray[np.float32]]
    rows: list[NDArray[np.float32] | None]
    remaining: int
    span: Span = field(default_factory=tracing.current_span)
    """The caller's span: the batches that embed its texts are traced under it."""


@dataclass(eq=False)
class _Item:
    """One text waiting for the model."""

    text: str
    tokens: int
    call: _Call
    row: int
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Merges concurrent `embed` calls into forward passes run one at a time on `executor`."""

    def __init__(
        self,
        encode: Callable[[Sequence[str]], NDArray[np.float32]],
        executor: Executor,
        *,
        encode_queries: Callable[[Sequence[str]], NDArray[np.float32]] | None = None,
        batch_tokens: int,
        max_wait_seconds: float,
        max_queue: int,
        batch_size: int = 32,
        round_texts: int = ROUND_TEXTS,
        inline_queries: bool = False,
    ) -> None:
        self._encode = encode
        self._encode_queries = encode_queries or encode
        self._executor = executor
        self._batch_tokens = batch_tokens
        self._batch_size = batch_size
        self._round_texts = round_texts
        self._max_wait = max_wait_seconds
        self._max_queue = max_queue
        # For a model a thread may call directly and whose query pass is short and CPU-bound (not an API).
        self._inline_queries = inline_queries
        self._queries: deque[_Item] = deque()
        self._passages: deque[_Item] = deque()
        # The passes of the round in progress not yet given to the model, shortest first.
        self._round: deque[list[_Item]] = deque()
        self._queued = 0
        self._arrived = asyncio.Event()
        # When the last forward pass ended and how long it took: a query is lone (may run inline)
        # only if the model has been idle at least that long since.
        self._last_pass_end = 0.0
        self._last_pass_seconds = 0.0
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
        self._fail_queued(Unavailable("the embedder is shutting down; retry on another replica"))

    def _fail_queued(self, error: Exception) -> None:
        waiting = [*self._queries, *(item for pass_ in self._round for item in pass_), *self._passages]
        self._queries.clear()
        self._round.clear()
        self._passages.clear()
        for item in waiting:
            if not item.call.future.done():
                item.call.future.set_exception(error)
        self._queued = 0
        QUEUE_DEPTH.set(0)

    async def embed(
        self, texts: Sequence[str], tokens: Sequence[int], *, urgent: bool
    ) -> NDArray[np.float32]:
        """The vectors of `texts` (token counts `tokens`), in order; `urgent` texts (queries) go first."""
        if self._worker is None or self._worker.done():
            raise Unavailable("the embedder's batcher is not running; retry on another replica")
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
        try:
            while True:
                while not self._queued:
                    self._arrived.clear()
                    await self._arrived.wait()
                await self._wait_for_company()
                batch, queries = self._take()
                QUEUE_DEPTH.set(self._queued)
                # Only with no passage waiting: the query encoder may spend CPU that passes then lack.
                quick = queries and not self._passages and not self._round
                if batch:
                    encode = self._encode_queries if quick else self._encode
                    await self._run_batch(batch, encode, inline=quick and self._lone())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug here would leave every caller waiting forever; fail them and refuse new calls instead.
            log.exception("the embedder's batcher stopped")
            self._fail_queued(Unavailable(f"the embedder's batcher failed ({exc}); retry on another replica"))

    def _lone(self) -> bool:
        """Whether a query pass may run on the loop: inline queries are on and the traffic is sparse."""
        idle = time.perf_counter() - self._last_pass_end
        return self._inline_queries and idle >= self._last_pass_seconds

    async def _wait_for_company(self) -> None:
        """With only new passages waiting and the model idle, waits up to the batch wait for more (a query ends it)."""
        while not self._queries and not self._round and 0 < len(self._passages) < self._round_texts:
            delay = self._passages[0].queued_at + self._max_wait - time.perf_counter()
            if delay <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), delay)

    def _take(self) -> tuple[list[_Item], bool]:
        """The next forward pass, and whether it holds queries: waiting queries, else the round's next
        pass (a new round if it is done)."""
        self._drop_cancelled(self._queries)
        if self._queries:
            queries = self._pop_live(self._queries, self._round_texts)
            first, *rest = self._passes(queries)
            for pass_ in reversed(rest):
                self._queries.extendleft(reversed(pass_))
            self._queued += sum(len(pass_) for pass_ in rest)
            return first, True
        return self._take_passages(), False

    def _take_passages(self) -> list[_Item]:
        while self._round:
            popped = self._round.popleft()
            # Every text of the pass leaves the count, live or not: a cancelled caller's texts were
            # counted too, and leaving them in kept the worker spinning on an empty queue.
            self._queued -= len(popped)
            pass_ = [item for item in popped if not item.call.future.done()]
            if pass_:
                return pass_
        taken = self._pop_live(self._passages, self._round_texts)
        if not taken:
            return []
        first, *rest = self._passes(taken)
        self._round.extend(rest)
        self._queued += sum(len(pass_) for pass_ in rest)
        return first

    def _passes(self, items: list[_Item]) -> list[list[_Item]]:
        """`items` grouped into forward passes of similar lengths, shortest first."""
        indices = forward_passes([item.tokens for item in items], self._batch_size, self._batch_tokens)
        return [[items[index] for index in pass_] for pass_ in indices]

    def _pop_live(self, queue: deque[_Item], limit: int) -> list[_Item]:
        """Takes up to `limit` texts of calls still waiting from the front of `queue` (they leave the count)."""
        taken: list[_Item] = []
        while queue and len(taken) < limit:
            item = queue.popleft()
            self._queued -= 1
            if not item.call.future.done():
                taken.append(item)
        return taken

    def _drop_cancelled(self, queue: deque[_Item]) -> None:
        """Forgets texts whose caller is gone (cancelled, or failed by another text)."""
        live = [item for item in queue if not item.call.future.done()]
        self._queued -= len(queue) - len(live)
        queue.clear()
        queue.extend(live)

    async def _run_batch(
        self, batch: list[_Item], encode: Callable[[Sequence[str]], NDArray[np.float32]], *, inline: bool
    ) -> None:
        """Embeds `batch` with `encode` in the model thread or, `inline`, on the event loop, and hands
        each caller its rows."""
        started = time.perf_counter()
        for item in batch:
            QUEUE_WAIT.observe(started - item.queued_at)
        tokens = sum(item.tokens for item in batch)
        BATCH_SIZE.observe(len(batch))
        BATCH_TOKENS.observe(tokens)
        loop = asyncio.get_running_loop()
        # A pass serves several callers: it is traced under the first one's span and linked from the others'.
        callers = list({id(item.call): item.call.span for item in batch}.values())
        attributes = {"ragline.embedder.batch_size": len(batch), "ragline.embedder.batch_tokens": tokens}
        links = [Link(caller.get_span_context()) for caller in callers[1:]] if tracing.enabled() else []
        try:
            with tracing.span("embedder.batch", attributes, links=links, parent=callers[0]):
                texts = [item.text for item in batch]
                try:
                    if inline:
                        vectors = self._timed_encode(encode, texts)
                    else:
                        vectors = await loop.run_in_executor(
                            self._executor, self._timed_encode, encode, texts
                        )
                finally:
                    self._last_pass_end = time.perf_counter()
                    self._last_pass_seconds = self._last_pass_end - started
        except asyncio.CancelledError:
            # stop() while the model runs this pass: its callers are told, like those still queued.
            for item in batch:
                if not item.call.future.done():
                    item.call.future.set_exception(Unavailable("the embedder is shutting down; retry"))
            raise
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

    @staticmethod
    def _timed_encode(
        encode: Callable[[Sequence[str]], NDArray[np.float32]], texts: list[str]
    ) -> NDArray[np.float32]:
        """Runs where the model runs, so that time queued for the model thread is not counted as model time."""
        started = time.perf_counter()
        vectors = encode(texts)
        MODEL_SECONDS.observe(time.perf_counter() - started)
        return vectors
