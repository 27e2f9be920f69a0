"""The query pipeline behind Search, Ask and AskStream: embed → retrieve → rerank → generate, with caches.

Each stage calls one service with a deadline derived from the caller's remaining time and
is timed. Every request needs its collection's current `generation`, which every retrieval and
answer cache key includes, so a cached result is never older than the collection's content.
The keys also hold the collection's creation time, as a collection deleted and created again
under the same name counts its generations from 0 again.

The collection comes from the state the retriever published in Redis when there is one
(`ragline.collection_state`, never older than a change whose call has returned), read in the
same round trip as the request's first cache read; otherwise from a lookup at the retriever.
Neither is on the critical path of a miss: the request already embeds its query (which does
not depend on the collection) and reads the retrieval or answer cache under the generation the
collection had at its previous query. Those results are used only once the collection confirms
them: a cached value only if its key holds the confirmed generation, an embedding read from the
cache only if the collection's model and dimension are the ones guessed. Results are written
under the generation the search itself saw, and the search starts only after the collection is
known, so it never sees older content than that.

A request waits for the published state before it asks the retriever only if its collection's
previous request found one; otherwise (a retriever that publishes nothing, or a state just
withdrawn) it asks at once, beside the cache read, and the next request tries the state again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

import grpc
from prometheus_client import Counter, Histogram

from ragline.channels import downstream_timeout
from ragline.collection_state import decode_state
from ragline.errors import InvalidArgument, Unavailable, from_rpc_error
from ragline.metrics import search_mode_label
from ragline.v1 import (
    common_pb2,
    embedder_service_pb2,
    gateway_service_pb2,
    generator_service_pb2,
    retriever_service_pb2,
)
from ragline_gateway.cache import QueryCache, digest
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.timings import Timings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Ask gives the passages to a model with a small context window; Search may return far more.
MAX_ASK_TOP_K = 50
MAX_SEARCH_TOP_K = 1000
# How long a "no reranker configured" answer is trusted before the embedder is asked again.
NO_RERANKER_RECHECK_SECONDS = 30.0
MAX_CANDIDATES = 1000
# Collections whose model and generation the pipeline remembers, to start work before a lookup returns.
MAX_KNOWN_COLLECTIONS = 10_000

LLM_TOKENS = Counter(
    "ragline_gateway_llm_tokens_total",
    "Tokens the generator consumed for answers, by model and kind.",
    ["model", "kind"],
)
RERANKS = Counter(
    "ragline_gateway_rerank_total", "Rerank stage outcomes (applied, skipped, failed).", ["outcome"]
)
TOP_SCORE = Histogram(
    "ragline_gateway_retrieval_top_score",
    "Score of the best retrieved chunk, by search mode.",
    ["mode"],
    buckets=(0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
EMPTY_RESULTS = Counter("ragline_gateway_empty_results_total", "Searches that found no chunk at all.")
COLLECTION_SOURCES = Counter(
    "ragline_gateway_collection_lookups_total",
    "Where a query's collection (its generation) came from: published in Redis, or a lookup at the retriever.",
    ["source"],
)


def _generation_settings(options: common_pb2.GenerationOptions) -> tuple[int, float]:
    return options.max_tokens, round(options.temperature, 3)


def _incarnation(collection: common_pb2.Collection) -> str:
    """Which collection of its name this is: its creation time."""
    return collection.create_time.ToJsonString()


@dataclass(frozen=True)
class Query:
    """What a Search, Ask or AskStream request asks for, validated and with defaults applied."""

    collection: str
    text: str
    top_k: int
    candidates: int
    mode: common_pb2.SearchMode
    cache_policy: gateway_service_pb2.CachePolicy
    filter: common_pb2.MetadataFilter | None

    def _shape(self) -> tuple[object, ...]:
        """Everything that changes which passages are found, except the collection and the text."""
        filter_bytes = (
            self.filter.SerializeToString(deterministic=True).hex() if self.filter is not None else ""
        )
        return (self.top_k, self.candidates, int(self.mode), filter_bytes)

    def retrieval_key(self, incarnation: str, generation: int) -> str:
        """The retrieval cache key: the collection's content version and every parameter of the search."""
        return digest(self.collection, incarnation, generation, self.text, *self._shape())

    def answer_key(self, incarnation: str, generation: int, options: common_pb2.GenerationOptions) -> str:
        """The answer cache key: the retrieval key's parts and the generation settings."""
        return digest(
            self.collection,
            incarnation,
            generation,
            self.text,
            *self._shape(),
            *_generation_settings(options),
        )

    def semantic_scope(self, incarnation: str, generation: int, options: common_pb2.GenerationOptions) -> str:
        """The semantic cache's list: everything the answer key holds except the question's wording."""
        scope = digest(incarnation, *self._shape(), *_generation_settings(options))
        return f"{self.collection}:{generation}:{scope}"

    @property
    def needs_embedding(self) -> bool:
        """Whether the search itself uses the query's embedding (keyword search does not)."""
        return self.mode != common_pb2.SEARCH_MODE_KEYWORD

    @property
    def reads_cache(self) -> bool:
        return self.cache_policy == gateway_service_pb2.CACHE_POLICY_UNSPECIFIED

    @property
    def writes_cache(self) -> bool:
        return self.cache_policy != gateway_service_pb2.CACHE_POLICY_BYPASS


@dataclass
class Retrieval:
    """The outcome of the retrieval stages."""

    generation: int
    hits: list[common_pb2.SearchHit]
    rerank_status: gateway_service_pb2.RerankStatus
    cache_layer: gateway_service_pb2.CacheLayer


def _pack(*messages: bytes) -> bytes:
    return json.dumps([base64.b64encode(m).decode() for m in messages]).encode()


def _unpack(value: bytes) -> list[bytes]:
    return [base64.b64decode(part) for part in json.loads(value)]


@dataclass
class _Embedded:
    """A query's embedding: from the embedding cache under `key`, or from the embedder (`key` None)."""

    values: list[float]
    key: str | None = None
    # The write of a fresh embedding to the cache, running beside the search; awaited before replying.
    saving: asyncio.Task[None] | None = None

    @property
    def cached(self) -> bool:
        return self.key is not None


@dataclass(frozen=True)
class _Known:
    """A collection as its previous query found it, and whether that found it published."""

    embedding_model: str
    dimension: int
    incarnation: str
    generation: int
    published: bool


def _embedding_key(embedding_model: str, dimension: int, text: str) -> str:
    return digest(embedding_model, dimension, text)


def _spawn(awaitable: Awaitable[T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(awaitable)
    # A speculative task's failure matters only to a request that uses its result, and that one awaits it.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


class _Early:
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
        self.embedding: asyncio.Task[_Embedded | None] | None = None
        self.embedding_timings = Timings()
        self.rpc: asyncio.Task[_Embedded] | None = None
        self.abandoned = False

    def cancel(self) -> None:
        """Stops the embedder call, if any; cache reads finish on their own, since a Redis command
        cancelled mid-reply costs its connection."""
        self.abandoned = True
        if self.rpc is not None:
            self.rpc.cancel()


class QueryPipeline:
    """Runs queries against the embedder, retriever and generator, through the cache."""

    def __init__(self, config: GatewayConfig, deps: Dependencies, cache: QueryCache) -> None:
        self.config = config
        self.deps = deps
        self.cache = cache
        self._no_reranker_until = 0.0
        self._known: dict[str, _Known] = {}
        # The work each request started beside its lookup, from `collection` to `retrieve` or `ask_events`.
        self._early: weakref.WeakKeyDictionary[Timings, _Early] = weakref.WeakKeyDictionary()

    def query(
        self,
        request: gateway_service_pb2.SearchRequest
        | gateway_service_pb2.AskRequest
        | gateway_service_pb2.AskStreamRequest,
    ) -> Query:
        """Validates a Search, Ask or AskStream request's query fields and fills in the configured defaults."""
        if isinstance(request, gateway_service_pb2.SearchRequest):
            field, text, max_top_k = "query", request.query, MAX_SEARCH_TOP_K
        else:
            field, text, max_top_k = "question", request.question, MAX_ASK_TOP_K
        if not text.strip():
            raise InvalidArgument(f"the {field} is empty; send some text", field=field)
        top_k = request.top_k or self.config.top_k
        if not 1 <= top_k <= max_top_k:
            raise InvalidArgument(f"top_k is {top_k}; it must be between 1 and {max_top_k}", field="top_k")
        candidates = request.candidates or max(self.config.candidates, top_k)
        if not top_k <= candidates <= MAX_CANDIDATES:
            raise InvalidArgument(
                f"candidates is {candidates}; it must be between top_k ({top_k}) and {MAX_CANDIDATES}",
                field="candidates",
            )
        return Query(
            request.collection or self.config.default_collection,
            text,
            top_k,
            candidates,
            request.mode,
            request.cache_policy,
            request.filter if request.HasField("filter") else None,
        )

    async def collection(
        self,
        query: Query,
        timings: Timings,
        context: grpc.aio.ServicerContext,
        options: common_pb2.GenerationOptions | None = None,
    ) -> common_pb2.Collection:
        """The query's collection (NOT_FOUND if missing), whose generation keys the caches: as
        published in Redis, or looked up at the retriever.

        Starts, beside that, the work that does not depend on it, for the `retrieve` (or, with
        `options`, the `ask_events`) that follows with the same `timings`.
        """
        known = self._known.get(query.collection)
        early = self._start_early(query, options, context)
        try:
            async with timings.stage("collection"):
                collection = await self._published(known, early)
                if collection is not None:
                    COLLECTION_SOURCES.labels("published").inc()
                else:
                    collection = await self._lookup(query, context)
                    COLLECTION_SOURCES.labels("retriever").inc()
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        # Whether the state was found is the early read's to note (`_cache_get_early`), before or
        # after this; a request that reads no cache (CACHE_POLICY_BYPASS) leaves it as it was.
        current = self._known.get(query.collection)
        if len(self._known) >= MAX_KNOWN_COLLECTIONS:
            self._known.clear()
        self._known[query.collection] = _Known(
            collection.embedding_model,
            collection.dimension,
            _incarnation(collection),
            collection.generation,
            current is not None and current.published,
        )
        if early is not None:
            self._early[timings] = early
        return collection

    @staticmethod
    async def _published(known: _Known | None, early: _Early | None) -> common_pb2.Collection | None:
        """The collection's published state, read with the first cache read, if the collection's
        previous request found one (else the lookup starts at once, and this returns None)."""
        if known is None or not known.published or early is None or early.cached is None:
            return None
        await asyncio.shield(early.cached)
        return decode_state(early.published) if early.published is not None else None

    async def _lookup(self, query: Query, context: grpc.aio.ServicerContext) -> common_pb2.Collection:
        # Without counts: a query needs only the collection's model, dimension and generation.
        request = retriever_service_pb2.GetCollectionRequest(
            name=query.collection, view=retriever_service_pb2.COLLECTION_VIEW_BASIC
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call("retriever", self.deps.retriever.GetCollection(request, timeout=timeout))
        collection: common_pb2.Collection = reply.collection
        return collection

    def _start_early(
        self,
        query: Query,
        options: common_pb2.GenerationOptions | None,
        context: grpc.aio.ServicerContext,
    ) -> _Early | None:
        """Starts the cache read and the embedding a request can do before its lookup returns."""
        early = _Early()
        # A keyword Search needs no vector; an Ask does, for its semantic cache.
        embeds = query.needs_embedding or options is not None
        if not query.reads_cache:
            if not embeds:
                return None
            # No cache read, hence no key to guess: the embedding is the embedder's.
            early.embedding = _spawn(self._embed_fresh(query, early, context))
            return early
        known = self._known.get(query.collection)
        if known is None:
            return None
        if options is None:
            layer, early.cached_key = "retrieval", query.retrieval_key(known.incarnation, known.generation)
        else:
            layer, early.cached_key = "answer", query.answer_key(known.incarnation, known.generation, options)
        early.cached = _spawn(self._cache_get_early(query, known, early, layer, embeds, context))
        return early

    async def _cache_get_early(
        self,
        query: Query,
        known: _Known,
        early: _Early,
        layer: str,
        embeds: bool,
        context: grpc.aio.ServicerContext,
    ) -> bytes | None:
        """The early cache read, with the collection's published state in the same round trip; on a
        miss it starts the embedding, so a warm request costs the gateway this one read."""
        async with early.cached_timings.stage("cache"):
            value, early.published = await self.cache.get_with_state(
                layer, early.cached_key, query.collection
            )
        # The collection's next request waits for the state only if this one found it.
        found = early.published is not None
        current = self._known.get(query.collection)
        if current is not None and current.published != found:
            self._known[query.collection] = replace(current, published=found)
        if value is None and embeds and not early.abandoned:
            early.embedding = _spawn(self._embed_early(query, known, early, context))
        return value

    async def _embed_early(
        self, query: Query, known: _Known, early: _Early, context: grpc.aio.ServicerContext
    ) -> _Embedded | None:
        """The embedding under the model of the collection's last lookup."""
        key = _embedding_key(known.embedding_model, known.dimension, query.text)
        async with early.embedding_timings.stage("embed"):
            if (cached := await self.cache.get("embedding", key)) is not None:
                return _Embedded(embedder_service_pb2.Embedding.FromString(cached).values[:], key)
            return await self._embed_rpc(query, early, context)

    async def _embed_fresh(
        self, query: Query, early: _Early, context: grpc.aio.ServicerContext
    ) -> _Embedded | None:
        async with early.embedding_timings.stage("embed"):
            return await self._embed_rpc(query, early, context)

    async def _embed_rpc(
        self, query: Query, early: _Early, context: grpc.aio.ServicerContext
    ) -> _Embedded | None:
        if early.abandoned:
            return None
        early.rpc = _spawn(self._embedder(query, context))
        return await early.rpc

    async def _embedder(self, query: Query, context: grpc.aio.ServicerContext) -> _Embedded:
        # The gateway's embedding layer caches query vectors (or the policy says not to): the
        # embedder's own cache would only cost a Redis round trip before and after the model.
        request = embedder_service_pb2.EmbedRequest(
            texts=[query.text], input_type=embedder_service_pb2.INPUT_TYPE_QUERY, bypass_cache=True
        )
        timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
        reply = await call("embedder", self.deps.embedder.Embed(request, timeout=timeout))
        return _Embedded(list(reply.embeddings[0].values))

    async def _cached(self, early: _Early | None, layer: str, key: str, timings: Timings) -> bytes | None:
        """The `layer` cache's value under `key`: the early read's if it read that very key, else read now."""
        if early is not None and early.cached is not None and early.cached_key == key:
            value = await asyncio.shield(early.cached)
            timings.merge(early.cached_timings)
            return value
        async with timings.stage("cache"):
            return await self.cache.get(layer, key)

    async def _embedding(
        self,
        query: Query,
        collection: common_pb2.Collection,
        timings: Timings,
        context: grpc.aio.ServicerContext,
        early: _Early | None,
    ) -> _Embedded:
        """The query's embedding: the early one if it holds for `collection`, else from the cache or the embedder."""
        key = _embedding_key(collection.embedding_model, collection.dimension, query.text)
        embedded = None
        if early is not None and early.cached is not None:
            # It decides whether an early embedding runs; it started with the lookup, so it is done or nearly.
            await asyncio.shield(early.cached)
        if early is not None and early.embedding is not None:
            embedded = await asyncio.shield(early.embedding)
            timings.merge(early.embedding_timings)
            # A vector read from the cache under another model's key is not this collection's.
            if embedded is not None and embedded.cached and embedded.key != key:
                embedded = None
        if embedded is None:
            async with timings.stage("embed"):
                if query.reads_cache and (cached := await self.cache.get("embedding", key)) is not None:
                    return _Embedded(embedder_service_pb2.Embedding.FromString(cached).values[:], key)
                embedded = await self._embedder(query, context)
        if not embedded.cached and query.writes_cache:
            value = embedder_service_pb2.Embedding(values=embedded.values).SerializeToString()
            embedded.saving = _spawn(
                self.cache.put("embedding", key, value, self.config.cache_embedding_ttl_seconds)
            )
        return embedded

    async def retrieve(
        self,
        query: Query,
        collection: common_pb2.Collection,
        timings: Timings,
        context: grpc.aio.ServicerContext,
        *,
        embedded: _Embedded | None = None,
    ) -> Retrieval:
        """Finds the query's passages: from the retrieval cache, or embed → search → rerank.

        `embedded` is the query's embedding, when the caller has it.
        """
        early = self._early.pop(timings, None)
        try:
            return await self._retrieve(query, collection, timings, context, embedded, early)
        finally:
            if early is not None:
                early.cancel()

    async def _retrieve(
        self,
        query: Query,
        collection: common_pb2.Collection,
        timings: Timings,
        context: grpc.aio.ServicerContext,
        embedded: _Embedded | None,
        early: _Early | None,
    ) -> Retrieval:
        if query.reads_cache:
            cached = await self._cached(
                early,
                "retrieval",
                query.retrieval_key(_incarnation(collection), collection.generation),
                timings,
            )
            if cached is not None:
                if embedded is not None and embedded.saving is not None:
                    await embedded.saving
                passages = gateway_service_pb2.RetrievedPassages.FromString(cached)
                return Retrieval(
                    collection.generation,
                    list(passages.hits),
                    passages.rerank_status,
                    gateway_service_pb2.CACHE_LAYER_RETRIEVAL,
                )
        if embedded is None:
            if query.needs_embedding:
                embedded = await self._embedding(query, collection, timings, context, early)
            else:
                embedded = _Embedded([])
        async with timings.stage("retrieve"):
            request = retriever_service_pb2.SearchChunksRequest(
                collection=query.collection,
                query_text=query.text,
                query_embedding=embedded.values,
                top_k=query.candidates,
                mode=query.mode,
                filter=query.filter,
            )
            timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
            reply = await call("retriever", self.deps.retriever.SearchChunks(request, timeout=timeout))
        # The generation the search saw, in its own snapshot: at least the lookup's, as it started after it.
        generation = reply.generation or collection.generation
        hits = list(reply.hits)
        if hits:
            TOP_SCORE.labels(search_mode_label(query.mode)).observe(hits[0].score)
        else:
            EMPTY_RESULTS.inc()
        hits, rerank_status = await self._rerank(query, hits, timings, context)
        if query.writes_cache:
            passages = gateway_service_pb2.RetrievedPassages(hits=hits, rerank_status=rerank_status)
            async with timings.stage("cache_write"):
                await self.cache.put(
                    "retrieval",
                    query.retrieval_key(_incarnation(collection), generation),
                    passages.SerializeToString(),
                    self.config.cache_retrieval_ttl_seconds,
                )
        if embedded.saving is not None:
            await embedded.saving
        layer = (
            gateway_service_pb2.CACHE_LAYER_EMBEDDING
            if embedded.cached
            else gateway_service_pb2.CACHE_LAYER_NONE
        )
        if not query.reads_cache or not self.cache.available:
            layer = gateway_service_pb2.CACHE_LAYER_UNSPECIFIED
        return Retrieval(generation, hits, rerank_status, layer)

    async def _rerank(
        self,
        query: Query,
        hits: list[common_pb2.SearchHit],
        timings: Timings,
        context: grpc.aio.ServicerContext,
    ) -> tuple[list[common_pb2.SearchHit], gateway_service_pb2.RerankStatus]:
        """Reorders the candidates by the embedder's reranker; keeps retrieval order when there is none or it fails."""
        if not self.config.rerank or time.monotonic() < self._no_reranker_until or len(hits) < 2:
            RERANKS.labels("skipped").inc()
            return hits[: query.top_k], gateway_service_pb2.RERANK_STATUS_SKIPPED
        request = embedder_service_pb2.RerankRequest(
            query=query.text, passages=[h.text for h in hits], top_n=query.top_k
        )
        try:
            async with timings.stage("rerank"):
                timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
                reply = await self.deps.embedder.Rerank(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
                # No reranker configured: do not ask again on every query, but notice one being added.
                self._no_reranker_until = time.monotonic() + NO_RERANKER_RECHECK_SECONDS
                RERANKS.labels("skipped").inc()
                return hits[: query.top_k], gateway_service_pb2.RERANK_STATUS_SKIPPED
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and (context.time_remaining() or 1.0) <= 0:
                raise from_rpc_error("embedder", exc) from None
            log.warning("reranker failed, answering from retrieval order: %s", exc.details())
            RERANKS.labels("failed").inc()
            return hits[: query.top_k], gateway_service_pb2.RERANK_STATUS_FAILED
        reranked = []
        for result in reply.results[: query.top_k]:
            hit = common_pb2.SearchHit()
            hit.CopyFrom(hits[result.index])
            hit.score = result.score
            reranked.append(hit)
        RERANKS.labels("applied").inc()
        return reranked, gateway_service_pb2.RERANK_STATUS_APPLIED

    async def ask_events(
        self, query: Query, options: common_pb2.GenerationOptions, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_service_pb2.AskStreamResponse]:
        """The events of an answer: retrieved passages, answer deltas, then the final AskResponse."""
        timings = Timings()
        collection = await self.collection(query, timings, context, options)
        early = self._early.pop(timings, None)
        try:
            cached = None
            if query.reads_cache:
                cached = await self._cached(
                    early,
                    "answer",
                    query.answer_key(_incarnation(collection), collection.generation, options),
                    timings,
                )
            if cached is None:
                # The question's embedding first: the semantic layer needs it, and may make retrieval unnecessary.
                embedded = await self._embedding(query, collection, timings, context, early)
        finally:
            if early is not None:
                early.cancel()
        if cached is not None:
            for event in self._from_cache(cached, gateway_service_pb2.CACHE_LAYER_ANSWER, timings):
                yield event
            return
        if query.reads_cache:
            async with timings.stage("cache"):
                similar = await self.cache.find_similar(
                    query.semantic_scope(_incarnation(collection), collection.generation, options),
                    embedded.values,
                )
            if similar is not None:
                if embedded.saving is not None:
                    await embedded.saving
                for event in self._from_cache(similar, gateway_service_pb2.CACHE_LAYER_SEMANTIC, timings):
                    yield event
                return
        retrieval = await self.retrieve(query, collection, timings, context, embedded=embedded)
        passages = gateway_service_pb2.RetrievedPassages(
            hits=retrieval.hits, rerank_status=retrieval.rerank_status
        )
        yield gateway_service_pb2.AskStreamResponse(passages=passages)
        final: generator_service_pb2.GenerateResponse | None = None
        async with timings.stage("generate"):
            request = generator_service_pb2.GenerateStreamRequest(
                question=query.text,
                passages=[
                    common_pb2.Passage(
                        document_id=h.document_id, chunk_id=h.chunk_id, text=h.text, score=h.score
                    )
                    for h in retrieval.hits
                ],
                options=options,
            )
            timeout = downstream_timeout(context, self.config.generate_timeout_seconds)
            try:
                async for event in self.deps.generator.GenerateStream(request, timeout=timeout):
                    if event.HasField("final"):
                        final = event.final
                    else:
                        yield gateway_service_pb2.AskStreamResponse(delta=event.delta)
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error("generator", exc) from None
        if final is None:
            raise Unavailable("the generator ended its stream without a final answer")
        for kind, count in (
            ("prompt", final.usage.prompt_tokens),
            ("completion", final.usage.completion_tokens),
        ):
            LLM_TOKENS.labels(final.model, kind).inc(count)
        response = gateway_service_pb2.AskResponse(
            answer=final.text,
            citations=final.citations,
            usage=final.usage,
            finish_reason=final.finish_reason,
            model=final.model,
            cache_layer=retrieval.cache_layer,
            rerank_status=retrieval.rerank_status,
            generation=retrieval.generation,
        )
        if query.writes_cache:
            # Under the generation the passages came from, which is at least the lookup's.
            answer_key = query.answer_key(_incarnation(collection), retrieval.generation, options)
            async with timings.stage("cache_write"):
                await self.cache.put(
                    "answer",
                    answer_key,
                    _pack(response.SerializeToString(), passages.SerializeToString()),
                    self.config.cache_answer_ttl_seconds,
                )
                await self.cache.remember_question(
                    query.semantic_scope(_incarnation(collection), retrieval.generation, options),
                    embedded.values,
                    answer_key,
                )
        response.stage_timings.extend(timings.stages)
        response.duration_seconds = timings.elapsed()
        yield gateway_service_pb2.AskStreamResponse(final=response)

    def _from_cache(
        self, value: bytes, layer: gateway_service_pb2.CacheLayer, timings: Timings
    ) -> list[gateway_service_pb2.AskStreamResponse]:
        answer_bytes, passages_bytes = _unpack(value)
        response = gateway_service_pb2.AskResponse.FromString(answer_bytes)
        response.cache_layer = layer
        response.stage_timings.extend(timings.stages)
        response.duration_seconds = timings.elapsed()
        passages = gateway_service_pb2.RetrievedPassages.FromString(passages_bytes)
        return [
            gateway_service_pb2.AskStreamResponse(passages=passages),
            gateway_service_pb2.AskStreamResponse(delta=response.answer),
            gateway_service_pb2.AskStreamResponse(final=response),
        ]
