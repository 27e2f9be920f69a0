"""A query's collection, and the work started beside its lookup so that a miss does not wait for it.

Every request needs its collection's current `generation`, which every retrieval and answer
cache key includes. The collection comes from the state the retriever published in Redis when
there is one (`ragline.collection_state`, never older than a change whose call has returned), read
in the same round trip as the request's first cache read; otherwise from a lookup at the retriever.

Neither is on the critical path of a miss: the request already embeds its query (which does not
depend on the collection) and reads the retrieval or answer cache under the generation the
collection had at its previous query. Those results are used only once the collection confirms
them: a cached value only if its key holds the confirmed generation, an embedding read from the
cache only if the collection's model and dimension are the ones guessed. The pipeline writes
results under the generation the search itself saw, and the search starts only after the
collection is known, so it never sees older content than that.

A request waits for the published state before it asks the retriever only if its collection's
previous request found one; otherwise (a retriever that publishes nothing, or a state just
withdrawn) it asks at once, beside the cache read, and the next request tries the state again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

import grpc
from prometheus_client import Counter

from ragline.channels import downstream_timeout
from ragline.collection_state import decode_state
from ragline.v1 import common_pb2, embedder_service_pb2, retriever_service_pb2
from ragline_gateway.cache import QueryCache
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.query import Query, embedding_key, incarnation
from ragline_gateway.timings import Timings

T = TypeVar("T")

# Collections whose model and generation the gateway remembers, to start work before a lookup returns.
MAX_KNOWN_COLLECTIONS = 10_000

COLLECTION_SOURCES = Counter(
    "ragline_gateway_collection_lookups_total",
    "Where a query's collection (its generation) came from: published in Redis, or a lookup at the retriever.",
    ["source"],
)


@dataclass
class Embedded:
    """A query's embedding: from the embedding cache under `key`, or from the embedder (`key` None)."""

    values: list[float]
    """The vector; empty for a keyword search, which needs none."""
    key: str | None = None
    """The embedding cache key it was read under, None when the embedder computed it."""
    model: str = ""
    """The model that made it, when the embedder computed it (a cache key already names its model)."""
    saving: asyncio.Task[None] | None = None
    """The write of a fresh embedding to the cache, running beside the search; awaited before replying."""

    @property
    def cached(self) -> bool:
        """Whether the vector came from the embedding cache."""
        return self.key is not None


@dataclass(frozen=True)
class _Known:
    """A collection as its previous query found it, and whether that found it published."""

    embedding_model: str
    dimension: int
    incarnation: str
    generation: int
    published: bool


def _name(query: Query) -> tuple[str, str]:
    """The query's collection as the gateway tells collections apart: its tenant's, by name."""
    return query.tenant, query.collection


def _spawn(awaitable: Awaitable[T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(awaitable)
    # A speculative task's failure matters only to a request that uses its result, and that one awaits it.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


class _Prefetched:
    """A request's work started beside its collection lookup (see the module's docstring).

    `cached` reads the retrieval (Search) or answer (Ask) cache under `cached_key`, built with
    the generation of the collection's previous lookup; `embedding`, which `cached` starts when it
    finds nothing (or which starts at once when the policy reads no cache), reads the embedding
    cache under the previous lookup's model and on a miss asks the embedder (`rpc`). Each records
    its stages into its own Timings, which join the request's only when the result is used.
    """

    def __init__(self) -> None:
        self.cached_key = ""
        self.cached: asyncio.Task[bytes | None] | None = None
        # The collection's published state, read with `cached` (ragline.collection_state).
        self.published: bytes | None = None
        self.cached_timings = Timings()
        self.embedding: asyncio.Task[Embedded | None] | None = None
        self.embedding_timings = Timings()
        self.rpc: asyncio.Task[Embedded] | None = None
        self.abandoned = False

    def cancel(self) -> None:
        """Stops the embedder call, if any; cache reads finish on their own, since a Redis command
        cancelled mid-reply costs its connection."""
        self.abandoned = True
        if self.rpc is not None:
            self.rpc.cancel()


@dataclass
class QueryRun:
    """One request's query once its collection is known, with the work prefetched for it and its timings."""

    query: Query
    """The validated query."""
    collection: common_pb2.Collection
    """The query's collection, whose generation keys the caches."""
    timings: Timings
    """The request's stage timings; prefetched work joins them when its result is used."""
    prefetched: _Prefetched | None
    """The work started beside the lookup, until `close`; None when none was started."""

    @property
    def incarnation(self) -> str:
        """Which collection of its name the query found (see `ragline_gateway.query`)."""
        return incarnation(self.collection)

    def close(self) -> None:
        """Stops the prefetched work the request did not use; the stages that follow fetch their own."""
        if self.prefetched is not None:
            self.prefetched.cancel()
            self.prefetched = None


class Prefetcher:
    """Finds queries' collections and starts, beside each lookup, the work that does not depend on it."""

    def __init__(self, config: GatewayConfig, deps: Dependencies, cache: QueryCache) -> None:
        self.config = config
        self.deps = deps
        self.cache = cache
        # By tenant and collection name: two tenants' collections of one name are two collections.
        self._known: dict[tuple[str, str], _Known] = {}

    async def open(
        self,
        query: Query,
        timings: Timings,
        context: grpc.aio.ServicerContext,
        options: common_pb2.GenerationOptions | None = None,
        fresh: bool = False,
    ) -> QueryRun:
        """The query's run, with its collection (NOT_FOUND if missing) as published in Redis or
        looked up at the retriever, and the work started beside that: the retrieval cache read for
        a Search, or with `options` the answer cache read for an Ask, and the query's embedding.

        The caller closes the run once it no longer needs the prefetched work. `fresh` looks the
        collection up at the retriever, whatever the gateway remembers or finds published.
        """
        if fresh:
            self._known.pop(_name(query), None)
        known = self._known.get(_name(query))
        prefetched = self._start(query, options, context)
        try:
            async with timings.stage("collection"):
                collection = await self._published(known, prefetched)
                if collection is not None:
                    COLLECTION_SOURCES.labels("published").inc()
                else:
                    collection = await self._lookup(query, context)
                    COLLECTION_SOURCES.labels("retriever").inc()
        except BaseException:
            if prefetched is not None:
                prefetched.cancel()
            raise
        # Whether the state was found is the early read's to note (`_cache_get_early`), before or
        # after this; a request that reads no cache (CACHE_POLICY_BYPASS) leaves it as it was.
        current = self._known.get(_name(query))
        if len(self._known) >= MAX_KNOWN_COLLECTIONS:
            self._known.clear()
        self._known[_name(query)] = _Known(
            collection.embedding_model,
            collection.dimension,
            incarnation(collection),
            collection.generation,
            current is not None and current.published,
        )
        return QueryRun(query, collection, timings, prefetched)

    async def cached(self, run: QueryRun, layer: str, key: str) -> bytes | None:
        """The `layer` cache's value under `key`: the prefetched read's if it read that very key, else read now."""
        prefetched = run.prefetched
        if prefetched is not None and prefetched.cached is not None and prefetched.cached_key == key:
            value = await asyncio.shield(prefetched.cached)
            run.timings.merge(prefetched.cached_timings)
            return value
        async with run.timings.stage("cache"):
            return await self.cache.get(layer, key)

    async def embedding(self, run: QueryRun, context: grpc.aio.ServicerContext) -> Embedded:
        """The query's embedding: the prefetched one if it holds for the collection, else from the cache or the embedder."""
        query, collection, timings, prefetched = run.query, run.collection, run.timings, run.prefetched
        key = embedding_key(query.tenant, collection.embedding_model, collection.dimension, query.text)
        embedded = None
        if prefetched is not None and prefetched.cached is not None:
            # It decides whether an early embedding runs; it started with the lookup, so it is done or nearly.
            await asyncio.shield(prefetched.cached)
        if prefetched is not None and prefetched.embedding is not None:
            embedded = await asyncio.shield(prefetched.embedding)
            timings.merge(prefetched.embedding_timings)
            # A vector read from the cache under another model's key is not this collection's.
            if embedded is not None and embedded.cached and embedded.key != key:
                embedded = None
        if embedded is not None and not embedded.cached and embedded.model != collection.embedding_model:
            # Embedded before the lookup by the model the collection had (or the default one): two
            # models' vectors may share a dimension (all-MiniLM-L6-v2 and multilingual-e5-small both
            # have 384), and a search would then rank by noise.
            embedded = None
        if embedded is None:
            async with timings.stage("embed"):
                if query.reads_cache and (cached := await self.cache.get("embedding", key)) is not None:
                    return Embedded(embedder_service_pb2.Embedding.FromString(cached).values[:], key)
                embedded = await self._embedder(query, collection.embedding_model, context)
        if not embedded.cached and query.writes_cache:
            value = embedder_service_pb2.Embedding(values=embedded.values).SerializeToString()
            embedded.saving = _spawn(
                self.cache.put("embedding", key, value, self.config.cache_embedding_ttl_seconds)
            )
        return embedded

    @staticmethod
    async def _published(
        known: _Known | None, prefetched: _Prefetched | None
    ) -> common_pb2.Collection | None:
        """The collection's published state, read with the first cache read, if the collection's
        previous request found one (else the lookup starts at once, and this returns None)."""
        if known is None or not known.published or prefetched is None or prefetched.cached is None:
            return None
        await asyncio.shield(prefetched.cached)
        return decode_state(prefetched.published) if prefetched.published is not None else None

    async def _lookup(self, query: Query, context: grpc.aio.ServicerContext) -> common_pb2.Collection:
        # Without counts: a query needs only the collection's model, dimension and generation.
        request = retriever_service_pb2.GetStoredCollectionRequest(
            name=query.collection, view=retriever_service_pb2.COLLECTION_VIEW_BASIC, tenant=query.tenant
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call("retriever", self.deps.retriever.GetStoredCollection(request, timeout=timeout))
        collection: common_pb2.Collection = reply.collection
        return collection

    def _start(
        self,
        query: Query,
        options: common_pb2.GenerationOptions | None,
        context: grpc.aio.ServicerContext,
    ) -> _Prefetched | None:
        """Starts the cache read and the embedding a request can do before its lookup returns."""
        prefetched = _Prefetched()
        # A keyword Search needs no vector; an Ask does, for its semantic cache.
        embeds = query.needs_embedding or options is not None
        if not query.reads_cache:
            if not embeds:
                return None
            # No cache read, hence no key to guess: the embedding is the embedder's.
            prefetched.embedding = _spawn(self._embed_fresh(query, prefetched, context))
            return prefetched
        known = self._known.get(_name(query))
        if known is None:
            return None
        if options is None:
            layer, prefetched.cached_key = (
                "retrieval",
                query.retrieval_key(known.incarnation, known.generation),
            )
        else:
            layer = "answer"
            prefetched.cached_key = query.answer_key(known.incarnation, known.generation, options)
        prefetched.cached = _spawn(self._cache_get_early(query, known, prefetched, layer, embeds, context))
        return prefetched

    async def _cache_get_early(
        self,
        query: Query,
        known: _Known,
        prefetched: _Prefetched,
        layer: str,
        embeds: bool,
        context: grpc.aio.ServicerContext,
    ) -> bytes | None:
        """The early cache read, with the collection's published state in the same round trip; on a
        miss it starts the embedding, so a warm request costs the gateway this one read."""
        async with prefetched.cached_timings.stage("cache"):
            value, prefetched.published = await self.cache.get_with_state(
                layer, prefetched.cached_key, query.tenant, query.collection
            )
        # The collection's next request waits for the state only if this one found it.
        found = prefetched.published is not None
        current = self._known.get(_name(query))
        if current is not None and current.published != found:
            self._known[_name(query)] = replace(current, published=found)
        if value is None and embeds and not prefetched.abandoned:
            prefetched.embedding = _spawn(self._embed_early(query, known, prefetched, context))
        return value

    async def _embed_early(
        self, query: Query, known: _Known, prefetched: _Prefetched, context: grpc.aio.ServicerContext
    ) -> Embedded | None:
        """The embedding under the model of the collection's last lookup."""
        key = embedding_key(query.tenant, known.embedding_model, known.dimension, query.text)
        async with prefetched.embedding_timings.stage("embed"):
            if (cached := await self.cache.get("embedding", key)) is not None:
                return Embedded(embedder_service_pb2.Embedding.FromString(cached).values[:], key)
            return await self._embed_rpc(query, known.embedding_model, prefetched, context)

    async def _embed_fresh(
        self, query: Query, prefetched: _Prefetched, context: grpc.aio.ServicerContext
    ) -> Embedded | None:
        async with prefetched.embedding_timings.stage("embed"):
            # The collection is not known yet: the default model is the likeliest.
            return await self._embed_rpc(query, "", prefetched, context)

    async def _embed_rpc(
        self, query: Query, model: str, prefetched: _Prefetched, context: grpc.aio.ServicerContext
    ) -> Embedded | None:
        if prefetched.abandoned:
            return None
        prefetched.rpc = _spawn(self._embedder(query, model, context))
        return await prefetched.rpc

    async def _embedder(self, query: Query, model: str, context: grpc.aio.ServicerContext) -> Embedded:
        """The query's vector from an embedder of `model` (the default embedder when empty)."""
        # The gateway's embedding layer caches query vectors (or the policy says not to): the
        # embedder's own cache would only cost a Redis round trip before and after the model.
        request = embedder_service_pb2.EmbedRequest(
            texts=[query.text], input_type=embedder_service_pb2.INPUT_TYPE_QUERY, bypass_cache=True
        )
        stub = await self.deps.embedders.for_model(model) if model else self.deps.embedder
        timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
        reply = await call("embedder", stub.Embed(request, timeout=timeout))
        if model:
            self.deps.embedders.check(model, reply)
        return Embedded(list(reply.embeddings[0].values), model=reply.model)
