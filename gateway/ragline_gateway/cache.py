"""The gateway's layered Redis cache: query embeddings, retrieval results, answers, and similar questions.

Every retrieval and answer key contains the collection's `generation`, which the retriever
increases with every change to the collection's content; an ingest or delete therefore
makes every older entry unreachable at once, and no answer built from old content is ever
served. Entries also expire after a per-layer TTL, so unreachable ones do not pile up.
Every key and semantic list is a tenant's (`ragline_gateway.query` builds them with the
caller's tenant), so no entry is ever served to another tenant.

The semantic layer keeps, per collection generation and answer settings, a capped list of
recent question embeddings (float16) with the key of their answer; a new question whose
embedding is within the configured cosine distance of one of them is served that answer.
The Redis images this project deploys carry no vector search module, and the list is
small, so the comparison is a NumPy dot product in the gateway.

Redis is optional: any Redis error counts as a miss (`outcome="error"`), marks Redis down
until the next health probe, and the request goes on without the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from prometheus_client import Counter

from ragline.collection_state import state_key

log = logging.getLogger(__name__)

CACHE_LOOKUPS = Counter(
    "ragline_gateway_cache_lookups_total",
    "Cache lookups by layer and outcome (hit, miss, error).",
    ["layer", "outcome"],
)
_PREFIX = "ragline:v1"


def digest(*parts: Any) -> str:
    """A stable SHA-256 hex digest of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class QueryCache:
    """Reads and writes the cache layers; every method degrades to a miss when Redis fails."""

    def __init__(
        self,
        client: aioredis.Redis | None,
        *,
        embedding_ttl: int,
        retrieval_ttl: int,
        answer_ttl: int,
        semantic_distance: float,
        semantic_entries: int,
    ) -> None:
        self.client = client
        self.available = client is not None
        self.embedding_ttl = embedding_ttl
        self.retrieval_ttl = retrieval_ttl
        self.answer_ttl = answer_ttl
        self.semantic_distance = semantic_distance
        self.semantic_entries = semantic_entries

    def _failed(self, layer: str, exc: Exception) -> None:
        if self.available:
            log.warning("Redis failed (%s); serving without cache until it answers again", exc)
        self.available = False
        CACHE_LOOKUPS.labels(layer, "error").inc()

    async def get(self, layer: str, key: str) -> bytes | None:
        """The value stored under `key` in `layer`, or None on a miss or a Redis failure."""
        (value,) = await self._read(layer, key)
        return value

    async def get_with_state(
        self, layer: str, key: str, tenant: str, collection: str
    ) -> tuple[bytes | None, bytes | None]:
        """`get`, and in the same round trip the state the retriever published of `tenant`'s
        `collection` (`ragline.collection_state`), or None for either on a miss or a Redis failure."""
        value, state = await self._read(layer, key, state_key(tenant, collection))
        return value, state

    async def _read(self, layer: str, key: str, *others: str) -> list[bytes | None]:
        """One MGET of `key` in `layer` (counted as its lookup) and of the keys `others`."""
        if self.client is None or not self.available:
            return [None] * (1 + len(others))
        try:
            values = await self.client.mget(f"{_PREFIX}:{layer}:{key}", *others)
        except (aioredis.RedisError, OSError) as exc:
            self._failed(layer, exc)
            return [None] * (1 + len(others))
        CACHE_LOOKUPS.labels(layer, "hit" if values[0] is not None else "miss").inc()
        return [value if isinstance(value, bytes) else None for value in values]

    async def put(self, layer: str, key: str, value: bytes, ttl: int) -> None:
        """Stores `value` under `key` in `layer` for `ttl` seconds; failures are logged, not raised."""
        if self.client is None or not self.available or ttl <= 0:
            return
        try:
            await self.client.set(f"{_PREFIX}:{layer}:{key}", value, ex=ttl)
        except (aioredis.RedisError, OSError) as exc:
            self._failed(layer, exc)

    async def find_similar(self, scope: str, embedding: Sequence[float]) -> bytes | None:
        """The answer stored for the closest past question in `scope`, if within the distance limit."""
        if self.client is None or not self.available or self.semantic_distance <= 0:
            return None
        try:
            entries = cast(list[bytes], await self.client.lrange(f"{_PREFIX}:semantic:{scope}", 0, -1))
        except (aioredis.RedisError, OSError) as exc:
            self._failed("semantic", exc)
            return None
        best_key, best_distance = None, self.semantic_distance
        if entries:
            query = np.asarray(embedding, dtype=np.float32)
            query /= np.linalg.norm(query) or 1.0
            keys = [e[: e.index(b"|")] for e in entries]
            vectors = np.stack(
                [np.frombuffer(e[e.index(b"|") + 1 :], dtype=np.float16) for e in entries]
            ).astype(np.float32)
            distances = 1.0 - vectors @ query
            index = int(np.argmin(distances))
            if distances[index] <= best_distance:
                best_key, best_distance = keys[index].decode(), float(distances[index])
        if best_key is None:
            CACHE_LOOKUPS.labels("semantic", "miss").inc()
            return None
        answer = await self.get("answer", best_key)
        CACHE_LOOKUPS.labels("semantic", "hit" if answer is not None else "miss").inc()
        return answer

    async def remember_question(self, scope: str, embedding: Sequence[float], answer_key: str) -> None:
        """Adds a question's embedding to `scope`'s semantic list, keeping the newest entries only."""
        if self.client is None or not self.available or self.semantic_distance <= 0:
            return
        vector = np.asarray(embedding, dtype=np.float32)
        vector /= np.linalg.norm(vector) or 1.0
        entry = answer_key.encode() + b"|" + vector.astype(np.float16).tobytes()
        name = f"{_PREFIX}:semantic:{scope}"
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(name, entry)
                pipe.ltrim(name, 0, self.semantic_entries - 1)
                pipe.expire(name, self.answer_ttl)
                await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            self._failed("semantic", exc)
