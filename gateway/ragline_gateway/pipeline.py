"""The query pipeline behind Search, Ask and AskStream: embed → retrieve → rerank → generate, with caches.

Each stage calls one service with a deadline derived from the caller's remaining time and is
timed. A request first finds its collection, whose generation keys the retrieval and answer
caches, while the cache read and the query's embedding already run beside that lookup
(`ragline_gateway.prefetch`); the stages below use that work when it holds for the collection.
Results are written under the generation the search itself saw, which is at least the lookup's.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
from prometheus_client import Counter, Histogram

from ragline import tracing
from ragline.channels import downstream_timeout
from ragline.errors import ServiceError, Unavailable, from_rpc_error
from ragline.metrics import search_mode_label
from ragline.v1 import (
    common_pb2,
    conversation_pb2,
    embedder_service_pb2,
    gateway_service_pb2,
    generator_service_pb2,
    retriever_service_pb2,
)
from ragline.validation import check_enum
from ragline_gateway.answers import Answerer
from ragline_gateway.cache import QueryCache
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.grouping import group_hits
from ragline_gateway.prefetch import Embedded, Prefetcher, QueryRun
from ragline_gateway.query import Query
from ragline_gateway.timings import Timings

log = logging.getLogger(__name__)

# How long a "no reranker configured" answer is trusted before the embedder is asked again.
NO_RERANKER_RECHECK_SECONDS = 30.0

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


class QueryPipeline:
    """Runs queries against the embedder, retriever and generator, through the cache."""

    def __init__(self, config: GatewayConfig, deps: Dependencies, cache: QueryCache) -> None:
        self.config = config
        self.deps = deps
        self.cache = cache
        self.prefetcher = Prefetcher(config, deps, cache)
        self.answerer = Answerer(config, deps)
        self._no_reranker_until = 0.0

    async def search(self, query: Query, timings: Timings, context: grpc.aio.ServicerContext) -> Retrieval:
        """Finds a Search's passages: from the retrieval cache, or embed → retrieve → rerank.

        A search whose collection moved to another model between its lookup and its retrieval
        (EMBEDDING_MODEL_CHANGED) is run once more, on the collection as it is now."""
        run = await self.prefetcher.open(query, timings, context)
        try:
            return await self._retrieve(run, context)
        except ServiceError as exc:
            if exc.reason != "EMBEDDING_MODEL_CHANGED":
                raise
        finally:
            run.close()
        return (await self._retrieve_fresh(query, timings, context))[2]

    async def _retrieve_fresh(
        self, query: Query, timings: Timings, context: grpc.aio.ServicerContext
    ) -> tuple[QueryRun, Embedded, Retrieval]:
        """The query's run, embedding and passages on its collection as the retriever has it now:
        for a query whose collection moved to another model since it was looked up."""
        run = await self.prefetcher.open(query, timings, context, fresh=True)
        try:
            embedded = await self.prefetcher.embedding(run, context)
            return run, embedded, await self._retrieve(run, context, embedded)
        finally:
            run.close()

    async def _retrieve(
        self, run: QueryRun, context: grpc.aio.ServicerContext, embedded: Embedded | None = None
    ) -> Retrieval:
        """The query's passages: from the retrieval cache, or embed → retrieve → rerank.

        `embedded` is the query's embedding, when the caller has it.
        """
        query, collection, timings = run.query, run.collection, run.timings
        if query.reads_cache:
            key = query.retrieval_key(run.incarnation, collection.generation)
            cached = await self.prefetcher.cached(run, "retrieval", key)
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
            embedded = (
                await self.prefetcher.embedding(run, context) if query.needs_embedding else Embedded([])
            )
        generation, hits = await self._search_chunks(run, embedded, context)
        hits = group_hits(hits, query.grouping, query.second_chunk_share)
        hits, rerank_status = await self._rerank(query, hits, timings, context)
        if query.writes_cache:
            passages = gateway_service_pb2.RetrievedPassages(hits=hits, rerank_status=rerank_status)
            async with timings.stage("cache_write"):
                await self.cache.put(
                    "retrieval",
                    query.retrieval_key(run.incarnation, generation),
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

    async def _search_chunks(
        self, run: QueryRun, embedded: Embedded, context: grpc.aio.ServicerContext
    ) -> tuple[int, list[common_pb2.SearchHit]]:
        """The retriever's candidates for the query, and the collection's generation its search saw."""
        query = run.query
        async with run.timings.stage("retrieve"):
            request = retriever_service_pb2.SearchChunksRequest(
                tenant=query.tenant,
                collection=query.collection,
                query_text=query.text,
                query_embedding=embedded.values,
                top_k=query.candidates,
                mode=query.mode,
                filter=query.filter,
                # Read-your-writes with read replicas: nothing older than the collection we were told about.
                min_generation=run.collection.generation,
                collection_create_time=run.collection.create_time,
                # Refused if the collection moved to another model since it was looked up.
                embedding_model=run.collection.embedding_model if embedded.values else "",
            )
            timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
            reply = await call("retriever", self.deps.retriever.SearchChunks(request, timeout=timeout))
            mode = search_mode_label(query.mode)
            tracing.record_hits(tracing.current_span(), mode, query.candidates, [h.score for h in reply.hits])
        hits = list(reply.hits)
        if hits:
            TOP_SCORE.labels(mode).observe(hits[0].score)
        else:
            EMPTY_RESULTS.inc()
        # The generation the search saw, in its own snapshot: at least the lookup's, as it started after it.
        return reply.generation or run.collection.generation, hits

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
        self,
        query: Query,
        options: common_pb2.GenerationOptions,
        context: grpc.aio.ServicerContext,
        history: Sequence[conversation_pb2.Turn] = (),
        timings: Timings | None = None,
    ) -> AsyncIterator[gateway_service_pb2.AskStreamResponse]:
        """The events of an answer: retrieved passages, answer deltas, then the final AskResponse.

        `history` is the conversation's earlier turns, for the prompt; `timings` the request's, when
        stages ran before this one (the conversation's)."""
        check_enum(options.answer_mode, common_pb2.AnswerMode, "options.answer_mode")
        timings = timings or Timings()
        run = await self.prefetcher.open(query, timings, context, options)
        collection = run.collection
        try:
            cached = None
            if query.reads_cache:
                key = query.answer_key(run.incarnation, collection.generation, options)
                cached = await self.prefetcher.cached(run, "answer", key)
            if cached is None:
                # The question's embedding first: the semantic layer needs it, and may make retrieval unnecessary.
                embedded = await self.prefetcher.embedding(run, context)
        finally:
            run.close()
        if cached is not None:
            for event in self._from_cache(cached, gateway_service_pb2.CACHE_LAYER_ANSWER, timings):
                yield event
            return
        if query.reads_cache:
            async with timings.stage("cache"):
                similar = await self.cache.find_similar(
                    query.semantic_scope(run.incarnation, collection.generation, options),
                    embedded.values,
                )
            if similar is not None:
                if embedded.saving is not None:
                    await embedded.saving
                for event in self._from_cache(similar, gateway_service_pb2.CACHE_LAYER_SEMANTIC, timings):
                    yield event
                return
        try:
            retrieval = await self._retrieve(run, context, embedded)
        except ServiceError as exc:
            if exc.reason != "EMBEDDING_MODEL_CHANGED":
                raise
            run, embedded, retrieval = await self._retrieve_fresh(query, timings, context)
        passages = gateway_service_pb2.RetrievedPassages(
            hits=retrieval.hits, rerank_status=retrieval.rerank_status
        )
        yield gateway_service_pb2.AskStreamResponse(passages=passages)
        requested = self.answerer.mode(options)
        relevance = await self.answerer.relevance(
            requested, embedded.values, run.collection.embedding_model, retrieval.hits, timings, context
        )
        mode = self.answerer.choose(requested, relevance)
        response = self.answerer.not_found(relevance)
        if response is None and mode == common_pb2.ANSWER_MODE_EXTRACTIVE:
            response = self.answerer.extractive(relevance, retrieval.hits)
        if response is not None:
            yield gateway_service_pb2.AskStreamResponse(delta=response.answer)
        else:
            generated: list[gateway_service_pb2.AskResponse] = []
            async for event in self._generate(
                query, options, retrieval.hits, history, timings, context, generated
            ):
                yield event
            response = generated[0]
            response.relevance = relevance.score
        response.cache_layer = retrieval.cache_layer
        response.rerank_status = retrieval.rerank_status
        response.generation = retrieval.generation
        if query.writes_cache:
            # Under the generation the passages came from, which is at least the lookup's.
            answer_key = query.answer_key(run.incarnation, retrieval.generation, options)
            async with timings.stage("cache_write"):
                await self.cache.put(
                    "answer",
                    answer_key,
                    _pack(response.SerializeToString(), passages.SerializeToString()),
                    self.config.cache_answer_ttl_seconds,
                )
                await self.cache.remember_question(
                    query.semantic_scope(run.incarnation, retrieval.generation, options),
                    embedded.values,
                    answer_key,
                )
        response.stage_timings.extend(timings.stages)
        response.duration_seconds = timings.elapsed()
        yield gateway_service_pb2.AskStreamResponse(final=response)

    async def _generate(
        self,
        query: Query,
        options: common_pb2.GenerationOptions,
        hits: list[common_pb2.SearchHit],
        history: Sequence[conversation_pb2.Turn],
        timings: Timings,
        context: grpc.aio.ServicerContext,
        generated: list[gateway_service_pb2.AskResponse],
    ) -> AsyncIterator[gateway_service_pb2.AskStreamResponse]:
        """Streams the generator's answer deltas (with the conversation's `history` in the prompt), then
        appends its complete answer to `generated`."""
        final: generator_service_pb2.GenerateResponse | None = None
        async with timings.stage("generate"):
            request = generator_service_pb2.GenerateStreamRequest(
                question=query.text,
                passages=[
                    common_pb2.Passage(
                        document_id=h.document_id, chunk_id=h.chunk_id, text=h.text, score=h.score
                    )
                    for h in hits
                ],
                options=options,
                history=history,
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
        generated.append(
            gateway_service_pb2.AskResponse(
                answer=final.text,
                citations=final.citations,
                usage=final.usage,
                finish_reason=final.finish_reason,
                model=final.model,
                answer_mode=common_pb2.ANSWER_MODE_GENERATIVE,
                sentences=final.sentences,
            )
        )

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
