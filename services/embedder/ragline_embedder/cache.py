"""The embedding cache in Redis: the same text embedded by the same model is computed once.

Re-ingesting a corpus and repeated queries are common, and a Redis round trip costs far less
than a forward pass. A key names the backend, model and dimension and the SHA-256 of the
exact text the model reads (prefix included), so a change of any of them never returns a
stale vector. Each batch costs one MGET and one pipelined SET. The cache is an optimisation
only: when Redis is slow or down the service embeds without it for a while, never failing a
call because of it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

import numpy as np
import redis.asyncio
from numpy.typing import NDArray
from prometheus_client import Counter
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CACHE_HITS = Counter("ragline_embedder_cache_hits_total", "Texts whose vector came from the cache.")
CACHE_MISSES = Counter("ragline_embedder_cache_misses_total", "Texts looked up in the cache and not found.")
CACHE_ERRORS = Counter(
    "ragline_embedder_cache_errors_total", "Cache round trips that failed (Redis down or slow)."
)

# After a failure the cache is left alone this long, so a down Redis costs one timeout, not one per call.
PAUSE_AFTER_FAILURE_SECONDS = 5.0


class EmbeddingCache:
    """Vectors of one model in Redis, as raw float32 bytes under `ragline:embedding:v1:<sha256>`."""

    def __init__(
        self, url: str, *, namespace: str, dimension: int, ttl_seconds: int, timeout_seconds: float
    ) -> None:
        # No retries inside the client: a failed round trip is a cache miss, and the call goes on.
        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, retry=None
        )
        self._namespace = namespace.encode()
        self._dimension = dimension
        self._ttl = ttl_seconds
        self._paused_until = 0.0

    def keys(self, texts: Sequence[str]) -> list[str]:
        """The cache key of each exact model input."""
        return [
            "ragline:embedding:v1:" + hashlib.sha256(self._namespace + b"\0" + text.encode()).hexdigest()
            for text in texts
        ]

    async def get(self, keys: Sequence[str]) -> list[NDArray[np.float32] | None]:
        """The cached vector of each key, or None; all None while Redis is unreachable."""
        misses: list[NDArray[np.float32] | None] = [None] * len(keys)
        if time.monotonic() < self._paused_until:
            return misses
        try:
            values = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return misses
        size = self._dimension * 4
        found: list[NDArray[np.float32] | None] = [
            np.frombuffer(value, dtype=np.float32)
            if isinstance(value, bytes) and len(value) == size
            else None
            for value in values
        ]
        hits = sum(vector is not None for vector in found)
        CACHE_HITS.inc(hits)
        CACHE_MISSES.inc(len(keys) - hits)
        return found

    async def put(self, keys: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Stores the vectors under their keys in one pipelined round trip; failures are only logged."""
        if time.monotonic() < self._paused_until:
            return
        pipeline = self._redis.pipeline(transaction=False)
        for key, vector in zip(keys, vectors, strict=True):
            pipeline.set(key, np.asarray(vector, dtype=np.float32).tobytes(), ex=self._ttl)
        try:
            await pipeline.execute()
        except (RedisError, OSError) as exc:
            self._failed("write", exc)

    async def close(self) -> None:
        """Closes the connections."""
        await self._redis.aclose()

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERRORS.inc()
        self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
        log.warning(
            "embedding cache %s failed (%s); embedding without the cache for %.0fs",
            operation,
            exc or type(exc).__name__,
            PAUSE_AFTER_FAILURE_SECONDS,
        )
