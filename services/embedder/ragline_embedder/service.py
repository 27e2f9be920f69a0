"""The `ragline.v1.EmbedderService` servicer: validates requests, uses the cache, batches and reranks.

The model is blocking and CPU-bound, so it runs in one worker thread of its own and the event
loop stays free to answer health checks and accept other calls meanwhile. One thread, not a
pool: concurrent forward passes would only fight over the same cores; instead the texts of
concurrent calls are merged into batches (`batching.py`) and the thread runs them one at a
time. The runtime's thread count, set when the model loads, applies to that thread. One
exception: on onnxruntime a pass of queries with nothing else waiting runs on the event loop
itself (`MicroBatcher`'s `inline_queries`), as handing a lone query to the thread and back
cost more than the loop's short pause. A local cross-encoder shares the thread for the same
reason; an HTTP reranker only waits on the network, so it runs in the default executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter, Histogram

from ragline.errors import FailedPrecondition, InvalidArgument, Unavailable
from ragline.metrics import LATENCY_BUCKETS
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1 import embedder_service_pb2_grpc as pb_grpc
from ragline_embedder.backends import EmbeddingBackend, InputType
from ragline_embedder.batching import MicroBatcher
from ragline_embedder.cache import EmbeddingCache
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.rerankers import Reranker
from ragline_embedder.wire import MalformedRequest

log = logging.getLogger(__name__)

TEXTS = Counter("ragline_embedder_texts_total", "Texts embedded, by input type.", ["input_type"])
TOKENS = Counter(
    "ragline_embedder_tokens_total",
    "Tokens of the texts embedded, after truncation, by input type.",
    ["input_type"],
)
RERANK_SECONDS = Histogram(
    "ragline_embedder_rerank_seconds", "Time the reranker took for one Rerank call.", buckets=LATENCY_BUCKETS
)
RERANK_PASSAGES = Counter("ragline_embedder_rerank_passages_total", "Passages scored by the reranker.")

_INPUT_TYPES = {
    pb.INPUT_TYPE_UNSPECIFIED: InputType.PASSAGE,
    pb.INPUT_TYPE_QUERY: InputType.QUERY,
    pb.INPUT_TYPE_PASSAGE: InputType.PASSAGE,
}


class EmbedderServicer(pb_grpc.EmbedderServiceServicer):
    """Serves one embedding backend and an optional reranker, loaded by `start()`."""

    def __init__(
        self,
        config: EmbedderConfig,
        load_backend: Callable[[], EmbeddingBackend],
        load_reranker: Callable[[], Reranker] | None = None,
    ) -> None:
        self._config = config
        self._load_backend = load_backend
        self._load_reranker = load_reranker
        self._backend: EmbeddingBackend | None = None
        self._reranker: Reranker | None = None
        self._cache: EmbeddingCache | None = None
        self._batcher: MicroBatcher | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-model")

    async def start(self) -> None:
        """Loads the model (and reranker) in the model thread while health reports NOT_SERVING."""
        loop = asyncio.get_running_loop()
        backend = await loop.run_in_executor(self._model_thread, self._load_backend)
        if self._load_reranker is not None:
            self._reranker = await loop.run_in_executor(self._model_thread, self._load_reranker)
        config = self._config
        if config.redis_url and config.cache_ttl_seconds:
            self._cache = EmbeddingCache(
                config.redis_url,
                namespace=f"{backend.backend}:{backend.model_name}:{backend.dimension}",
                dimension=backend.dimension,
                ttl_seconds=config.cache_ttl_seconds,
                timeout_seconds=config.cache_timeout_seconds,
            )
        self._batcher = MicroBatcher(
            backend.encode,
            self._model_thread,
            encode_queries=backend.encode_queries,
            batch_tokens=config.model_batch_tokens(),
            # An API request is not a forward pass: its size limits are the openai backend's own.
            batch_size=config.batch_size if backend.backend == "local" else config.openai_max_inputs,
            max_wait_seconds=config.batch_wait_ms / 1000,
            max_queue=config.max_queue,
            # An onnxruntime session may be run from any thread, and a query's pass takes milliseconds.
            inline_queries=backend.runtime == "onnxruntime",
        )
        self._batcher.start()
        self._backend = backend
        log.info(
            "embedding with %s (%s, %d dimensions) on %s",
            backend.model_name,
            backend.backend,
            backend.dimension,
            backend.runtime,
        )

    async def check_ready(self) -> None:
        """Raises until the model is loaded."""
        self._ready_backend()

    async def stop(self) -> None:
        """Fails queued calls, closes the cache and ends the model thread."""
        if self._batcher is not None:
            await self._batcher.stop()
        if self._cache is not None:
            await self._cache.close()
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    def _ready_backend(self) -> EmbeddingBackend:
        if self._backend is None:
            raise Unavailable("the embedder is still starting (loading its model); retry shortly")
        return self._backend

    async def Embed(
        self, request: pb.EmbedRequest | MalformedRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedResponse:
        if isinstance(request, MalformedRequest):
            raise request.error()
        backend = self._ready_backend()
        texts = list(request.texts)
        self._validate(texts, "texts")
        input_type = _INPUT_TYPES.get(request.input_type)
        if input_type is None:
            raise InvalidArgument(f"unknown input_type {request.input_type}", field="input_type")
        prepared = [backend.prefixes.apply(text, input_type) for text in texts]
        tokens = self._token_counts(backend, prepared)
        vectors = await self._embed(
            prepared, tokens, urgent=input_type is InputType.QUERY, use_cache=not request.bypass_cache
        )
        TEXTS.labels(input_type.value).inc(len(texts))
        TOKENS.labels(input_type.value).inc(sum(tokens))
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=row) for row in vectors.tolist()],
            model=backend.model_name,
            dimension=backend.dimension,
        )

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest | MalformedRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        backend = self._ready_backend()
        return pb.GetModelInfoResponse(
            model=backend.model_name,
            dimension=backend.dimension,
            max_input_tokens=backend.max_input_tokens,
            backend=backend.backend,
            reranker=self._reranker.model_name if self._reranker is not None else "",
        )

    async def Rerank(
        self, request: pb.RerankRequest | MalformedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RerankResponse:
        if isinstance(request, MalformedRequest):
            raise request.error()
        self._ready_backend()
        reranker = self._reranker
        if reranker is None:
            raise FailedPrecondition(
                "no reranker configured; set EMBEDDER_RERANK_BACKEND", reason="RERANKER_NOT_CONFIGURED"
            )
        if not request.query.strip():
            raise InvalidArgument(
                "query is empty: send the text the passages are ranked against", field="query"
            )
        passages = list(request.passages)
        self._validate(passages, "passages")
        if request.top_n < 0:
            raise InvalidArgument(f"top_n is {request.top_n}; it must be 0 (all) or more", field="top_n")
        started = time.perf_counter()
        executor = self._model_thread if reranker.in_process else None
        scores = await asyncio.get_running_loop().run_in_executor(
            executor, reranker.score, request.query, passages
        )
        RERANK_SECONDS.observe(time.perf_counter() - started)
        RERANK_PASSAGES.inc(len(passages))
        ranked = sorted(range(len(passages)), key=lambda index: -scores[index])
        if request.top_n:
            ranked = ranked[: request.top_n]
        return pb.RerankResponse(
            results=[pb.RerankResult(index=index, score=scores[index]) for index in ranked],
            model=reranker.model_name,
        )

    def _token_counts(self, backend: EmbeddingBackend, prepared: Sequence[str]) -> list[int]:
        """Tokens the model will read of each text, after truncation; rejects over-long texts if configured."""
        limit = backend.max_input_tokens
        counts = backend.count_tokens(prepared)
        if self._config.overlong_policy == "reject":
            for index, count in enumerate(counts):
                if count > limit:
                    raise InvalidArgument(
                        f"texts[{index}] has {count} tokens, more than the {limit} {backend.model_name} reads "
                        "(EMBEDDER_OVERLONG_POLICY=reject); split it into shorter texts",
                        field=f"texts[{index}]",
                    )
        return [min(count, limit) for count in counts]

    async def _embed(
        self, prepared: list[str], tokens: list[int], *, urgent: bool, use_cache: bool
    ) -> NDArray[np.float32]:
        """Vectors from the cache (if `use_cache`) where it has them, from the model (batched with
        other calls) otherwise."""
        assert self._batcher is not None, "start() created the batcher before the backend was published"
        if self._cache is None or not use_cache:
            return await self._batcher.embed(prepared, tokens, urgent=urgent)
        keys = self._cache.keys(prepared)
        cached = await self._cache.get(keys)
        missing = [index for index, vector in enumerate(cached) if vector is None]
        if not missing:
            return np.vstack(cached)  # type: ignore[arg-type]
        computed = await self._batcher.embed(
            [prepared[i] for i in missing], [tokens[i] for i in missing], urgent=urgent
        )
        await self._cache.put([keys[i] for i in missing], computed)
        for row, index in enumerate(missing):
            cached[index] = computed[row]
        return np.vstack(cached)  # type: ignore[arg-type]

    def _validate(self, texts: Sequence[str], name: str) -> None:
        if not texts:
            raise InvalidArgument(f"{name} is empty: send at least one text", field=name)
        limit = self._config.max_batch
        if len(texts) > limit:
            raise InvalidArgument(
                f"{name}[{limit}]: too many texts ({len(texts)}); one request may carry at most {limit} "
                "(EMBEDDER_MAX_BATCH), so split it into smaller requests",
                field=f"{name}[{limit}]",
            )
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidArgument(
                    f"{name}[{index}] is empty or only whitespace; every text must have content",
                    field=f"{name}[{index}]",
                )
