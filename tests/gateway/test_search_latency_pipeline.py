"""The query pipeline looks its collection up beside the embedding, and its caches stay exact.

Unit tests with fake dependencies: an in-memory Redis, a retriever and an embedder whose
calls can be held open, so that the order of events is controlled rather than timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from ragline.collection_state import state_key
from ragline.errors import FailedPrecondition, NotFound
from ragline.v1 import common_pb2, embedder_service_pb2, generator_service_pb2, retriever_service_pb2
from ragline.v1 import gateway_service_pb2 as gw
from ragline_gateway.cache import QueryCache
from ragline_gateway.config import GatewayConfig
from ragline_gateway.embedders import Embedders
from ragline_gateway.pipeline import QueryPipeline
from ragline_gateway.query import MAX_ASK_TOP_K, MAX_SEARCH_TOP_K, Query
from ragline_gateway.timings import Timings

COLLECTION = "docs"
TENANT = "acme"


class FakeRedis:
    """The few Redis commands the cache uses, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.gets: list[str] = []
        self.retrieval_read = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(0)
        self.gets.append(key)
        if ":retrieval:" in key:
            self.retrieval_read.set()
        value = self.data.get(key)
        return value if isinstance(value, bytes) else None

    async def mget(self, *keys: str) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ex: int | None = None) -> None:
        await asyncio.sleep(0)
        self.data[key] = value

    async def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return list(self.data.get(key, []))

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def keys_of(self, layer: str) -> list[str]:
        return [k for k in self.data if k.startswith(f"ragline:v1:{layer}:")]


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.ops: list[Callable[[], None]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def lpush(self, key: str, value: bytes) -> None:
        self.ops.append(lambda: self.redis.data.setdefault(key, []).insert(0, value))

    def ltrim(self, key: str, start: int, end: int) -> None:
        self.ops.append(lambda: self.redis.data.__setitem__(key, self.redis.data[key][start : end + 1]))

    def expire(self, key: str, ttl: int) -> None:
        pass

    async def execute(self) -> None:
        for op in self.ops:
            op()


class Gate:
    """Holds a fake RPC open until released; records that it was entered."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()
        self.released.set()

    def hold(self) -> None:
        self.released.clear()

    async def pass_through(self) -> None:
        self.entered.set()
        await self.released.wait()


class FakeRetriever:
    def __init__(self) -> None:
        self.collection = common_pb2.Collection(
            name=COLLECTION, embedding_model="model-a", dimension=3, generation=1
        )
        self.lookup_gate = Gate()
        self.search_gate = Gate()
        self.events: list[str] = []
        self.search_generation: int | None = None  # what SearchChunks reports; None: the collection's
        self.documents = "doc"  # the name of the collection's documents, hit at each generation
        self.tenant_documents: dict[str, str] = {}  # another name for a tenant's documents
        self.searches: list[retriever_service_pb2.SearchChunksRequest] = []
        self.lookups: list[retriever_service_pb2.GetStoredCollectionRequest] = []
        self.missing = False
        # Collections the next lookups return before `collection` (a lookup just before a migration's switch).
        self.stale: list[common_pb2.Collection] = []

    def GetStoredCollection(self, request: Any, timeout: float) -> Awaitable[Any]:
        async def run() -> Any:
            self.events.append("lookup-start")
            self.lookups.append(request)
            await self.lookup_gate.pass_through()
            self.events.append("lookup-end")
            if self.missing:
                raise NotFound(f"collection {request.name!r} does not exist", field="name")
            collection = common_pb2.Collection()
            collection.CopyFrom(self.stale.pop(0) if self.stale else self.collection)
            return retriever_service_pb2.GetStoredCollectionResponse(collection=collection)

        return run()

    def SearchChunks(
        self, request: retriever_service_pb2.SearchChunksRequest, timeout: float
    ) -> Awaitable[Any]:
        async def run() -> Any:
            self.events.append("search")
            self.searches.append(request)
            await self.search_gate.pass_through()
            if request.embedding_model and request.embedding_model != self.collection.embedding_model:
                # As the retriever: a query vector of the model the collection had before a migration.
                raise FailedPrecondition("moved to another model", reason="EMBEDDING_MODEL_CHANGED")
            generation = self.search_generation or self.collection.generation
            documents = self.tenant_documents.get(request.tenant, self.documents)
            hit = common_pb2.SearchHit(
                chunk_id=str(generation),
                document_id=f"{documents}-at-generation-{generation}",
                text="passage",
                score=0.5,
            )
            return retriever_service_pb2.SearchChunksResponse(hits=[hit], generation=generation)

        return run()


class FakeEmbedder:
    def __init__(self, retriever: FakeRetriever, model: str = "model-a") -> None:
        self.retriever = retriever
        self.gate = Gate()
        self.calls = 0
        self.cancelled = 0
        self.fail: grpc.StatusCode | None = None
        self.requests: list[embedder_service_pb2.EmbedRequest] = []
        self.model = model

    def Embed(self, request: Any, timeout: float) -> Awaitable[Any]:
        async def run() -> Any:
            self.calls += 1
            self.requests.append(request)
            self.retriever.events.append("embed")
            try:
                await self.gate.pass_through()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            if self.fail is not None:
                raise NotFound("embedder broke")  # any error: it must reach the caller unchanged
            return embedder_service_pb2.EmbedResponse(
                embeddings=[embedder_service_pb2.Embedding(values=[0.1, 0.2, 0.3])],
                model=self.model,
                dimension=3,
            )

        return run()

    async def GetModelInfo(self, request: Any, timeout: float) -> Any:
        return embedder_service_pb2.GetModelInfoResponse(model=self.model, dimension=3)

    def Rerank(self, request: Any, timeout: float) -> Awaitable[Any]:
        raise AssertionError("reranking is off in these tests")


class FakeGenerator:
    def __init__(self) -> None:
        self.calls = 0

    async def GenerateStream(self, request: Any, timeout: float) -> Any:
        self.calls += 1
        passage = request.passages[0].document_id
        yield generator_service_pb2.GenerateStreamResponse(delta="from ")
        yield generator_service_pb2.GenerateStreamResponse(
            final=generator_service_pb2.GenerateResponse(text=f"from {passage}", model="fake")
        )


class FakeContext:
    def time_remaining(self) -> float | None:
        return None


@dataclasses.dataclass
class Setup:
    pipeline: QueryPipeline
    redis: FakeRedis
    retriever: FakeRetriever
    embedder: FakeEmbedder
    generator: FakeGenerator

    async def search(
        self,
        text: str = "where is it?",
        policy: gw.CachePolicy = gw.CACHE_POLICY_UNSPECIFIED,
        mode: common_pb2.SearchMode = common_pb2.SEARCH_MODE_UNSPECIFIED,
        tenant: str = TENANT,
    ) -> tuple[gw.SearchResponse, list[str]]:
        """What the gateway's Search handler does for a caller of `tenant`, and the stages it reported."""
        message = gw.Query(text=text, collection=COLLECTION, cache_policy=policy, mode=mode)
        query = Query.parse(message, self.pipeline.config, MAX_SEARCH_TOP_K, tenant)
        timings = Timings()
        context: Any = FakeContext()
        retrieval = await self.pipeline.search(query, timings, context)
        response = gw.SearchResponse(
            hits=retrieval.hits,
            stage_timings=timings.stages,
            cache_layer=retrieval.cache_layer,
            generation=retrieval.generation,
        )
        return response, [t.stage for t in timings.stages]

    async def ask(self, text: str = "where is it?", tenant: str = TENANT) -> gw.AskResponse:
        message = gw.Query(text=text, collection=COLLECTION)
        query = Query.parse(message, self.pipeline.config, MAX_ASK_TOP_K, tenant)
        context: Any = FakeContext()
        options = common_pb2.GenerationOptions(max_tokens=16)
        async for event in self.pipeline.ask_events(query, options, context):
            if event.HasField("final"):
                return event.final
        raise AssertionError("no final answer")


@pytest.fixture
def setup() -> Setup:
    config = dataclasses.replace(
        GatewayConfig(),
        rerank=False,
        semantic_cache_distance=0.0,
        answer_mode="generative",
        not_found_threshold=-1.0,
    )
    redis = FakeRedis()
    cache = QueryCache(
        redis,  # type: ignore[arg-type]
        embedding_ttl=60,
        retrieval_ttl=60,
        answer_ttl=60,
        semantic_distance=0.0,
        semantic_entries=10,
    )
    retriever = FakeRetriever()
    embedder = FakeEmbedder(retriever)
    # An embedder of the model collections can be migrated to (MORE_EMBEDDER_ADDRS).
    embedder_b = FakeEmbedder(retriever, "model-b")
    generator = FakeGenerator()
    deps: Any = type(
        "Deps",
        (),
        {
            "retriever": retriever,
            "embedder": embedder,
            "embedders": Embedders(embedder, [embedder_b]),  # type: ignore[arg-type]
            "generator": generator,
        },
    )()
    return Setup(QueryPipeline(config, deps, cache), redis, retriever, embedder, generator)


async def test_a_cold_search_embeds_while_the_collection_is_looked_up(setup: Setup) -> None:
    await setup.search("first")  # the pipeline now knows the collection's model and generation
    setup.retriever.events.clear()
    setup.embedder.gate.entered.clear()
    setup.retriever.lookup_gate.hold()
    search = asyncio.ensure_future(setup.search("second"))
    # The embedder is called while the lookup is still held open.
    await asyncio.wait_for(setup.embedder.gate.entered.wait(), 5)
    assert setup.retriever.events[:2] == ["lookup-start", "embed"]
    assert "search" not in setup.retriever.events
    setup.retriever.lookup_gate.released.set()
    reply, stages = await asyncio.wait_for(search, 5)
    # The search itself starts only after the lookup has returned.
    assert setup.retriever.events.index("search") > setup.retriever.events.index("lookup-end")
    assert stages == ["collection", "cache", "embed", "retrieve", "cache_write"]
    assert reply.cache_layer == gw.CACHE_LAYER_NONE


@pytest.mark.parametrize("policy", [gw.CACHE_POLICY_BYPASS, gw.CACHE_POLICY_REFRESH])
async def test_without_cache_reads_the_first_search_already_embeds_beside_the_lookup(
    setup: Setup, policy: gw.CachePolicy
) -> None:
    setup.retriever.lookup_gate.hold()
    search = asyncio.ensure_future(setup.search("first", policy))
    await asyncio.wait_for(setup.embedder.gate.entered.wait(), 5)
    setup.retriever.lookup_gate.released.set()
    reply, stages = await asyncio.wait_for(search, 5)
    refresh = policy == gw.CACHE_POLICY_REFRESH
    assert stages == ["collection", "embed", "retrieve"] + (["cache_write"] if refresh else [])
    assert reply.cache_layer == gw.CACHE_LAYER_UNSPECIFIED
    # REFRESH writes what it found, under the keys of the collection the lookup returned.
    written = bool(setup.redis.keys_of("retrieval")) and bool(setup.redis.keys_of("embedding"))
    assert written == refresh


async def test_a_warm_search_reads_the_cache_beside_the_lookup_and_never_embeds(setup: Setup) -> None:
    first, _ = await setup.search()
    calls = setup.embedder.calls
    setup.redis.data = {k: v for k, v in setup.redis.data.items() if ":embedding:" not in k}
    setup.retriever.lookup_gate.hold()
    setup.redis.retrieval_read.clear()
    reads = len(setup.redis.gets)
    search = asyncio.ensure_future(setup.search())
    # The retrieval cache is read while the lookup is still held open.
    await asyncio.wait_for(setup.redis.retrieval_read.wait(), 5)
    setup.retriever.lookup_gate.released.set()
    reply, stages = await asyncio.wait_for(search, 5)
    assert reply.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    assert [h.chunk_id for h in reply.hits] == [h.chunk_id for h in first.hits]
    assert stages == ["collection", "cache"]
    # The retrieval cache served: neither the embedding cache nor the embedder was asked.
    assert setup.embedder.calls == calls
    assert [k for k in setup.redis.gets[reads:] if ":embedding:" in k] == []


async def test_a_search_after_an_ingest_never_gets_the_older_generations_results(setup: Setup) -> None:
    before, _ = await setup.search()
    assert before.hits[0].document_id == "doc-at-generation-1"
    assert (await setup.search())[0].cache_layer == gw.CACHE_LAYER_RETRIEVAL
    # An ingest moves the generation: the early cache read still uses the old one, and finds its entry.
    setup.retriever.collection.generation = 2
    after, stages = await setup.search()
    assert after.cache_layer != gw.CACHE_LAYER_RETRIEVAL
    assert after.hits[0].document_id == "doc-at-generation-2"
    assert after.generation == 2
    # The early read under generation 1 is dropped unreported; the read under 2 missed.
    assert stages == ["collection", "cache", "embed", "retrieve", "cache_write"]
    again, _ = await setup.search()
    assert again.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    assert again.hits[0].document_id == "doc-at-generation-2"


async def test_results_are_cached_under_the_generation_the_search_saw(setup: Setup) -> None:
    await setup.search("warm up")
    # An ingest lands between the lookup (generation 1) and the search (generation 2).
    setup.retriever.search_generation = 2
    reply, _ = await setup.search()
    assert reply.generation == 2
    setup.retriever.search_generation = None
    # Whoever still reads generation 1 must not get generation 2's results under its key, nor the
    # reverse; a request that reads 2 does.
    assert (await setup.search())[0].cache_layer != gw.CACHE_LAYER_RETRIEVAL
    setup.retriever.collection.generation = 2
    assert (await setup.search())[0].cache_layer == gw.CACHE_LAYER_RETRIEVAL


async def test_a_collection_created_again_never_gets_the_deleted_ones_results(setup: Setup) -> None:
    assert (await setup.search())[0].hits[0].document_id == "doc-at-generation-1"
    assert (await setup.ask()).answer == "from doc-at-generation-1"
    # Deleted, created again under the same name, and ingested into: the generation is 1 again.
    setup.retriever.collection.create_time.FromJsonString("2026-11-24T10:05:00Z")
    setup.retriever.documents = "new-doc"
    search, _ = await setup.search()
    assert search.cache_layer != gw.CACHE_LAYER_RETRIEVAL
    assert search.hits[0].document_id == "new-doc-at-generation-1"
    ask = await setup.ask()
    assert ask.cache_layer not in (gw.CACHE_LAYER_ANSWER, gw.CACHE_LAYER_SEMANTIC)
    assert ask.answer == "from new-doc-at-generation-1"
    assert (await setup.search())[0].cache_layer == gw.CACHE_LAYER_RETRIEVAL


async def test_an_ask_after_an_ingest_never_gets_the_older_answer(setup: Setup) -> None:
    first = await setup.ask()
    assert first.answer == "from doc-at-generation-1"
    assert (await setup.ask()).cache_layer == gw.CACHE_LAYER_ANSWER
    setup.retriever.collection.generation = 2
    after = await setup.ask()
    assert after.cache_layer != gw.CACHE_LAYER_ANSWER
    assert after.answer == "from doc-at-generation-2"
    assert (await setup.ask()).cache_layer == gw.CACHE_LAYER_ANSWER
    assert setup.generator.calls == 2


async def test_an_ask_lists_its_stages_in_the_order_they_started(setup: Setup) -> None:
    await setup.ask("warm up")
    reply = await setup.ask()
    stages = [t.stage for t in reply.stage_timings]
    # answer cache (early), embedding (early), semantic cache, retrieval cache, search, its cache
    # write, generate, the answer's cache writes
    assert stages == [
        "collection",
        "cache",
        "embed",
        "cache",
        "cache",
        "retrieve",
        "cache_write",
        "generate",
        "cache_write",
    ]


async def test_an_embedding_cached_for_another_model_is_not_used(setup: Setup) -> None:
    await setup.search("warm up")
    await setup.search("where is it?")
    calls = setup.embedder.calls
    # The collection was recreated for another model: same name, the early read guesses the old model.
    setup.retriever.collection.embedding_model = setup.embedder.model = "model-c"
    setup.retriever.collection.generation = 5
    reply, _ = await setup.search("where is it?")
    assert setup.embedder.calls == calls + 1
    assert reply.cache_layer == gw.CACHE_LAYER_NONE
    reply, _ = await setup.search("where is it?", gw.CACHE_POLICY_REFRESH)
    again, _ = await setup.search("where is it?")
    assert again.cache_layer == gw.CACHE_LAYER_RETRIEVAL


async def test_a_missing_collection_is_not_found_and_stops_the_embedding(setup: Setup) -> None:
    setup.retriever.missing = True
    setup.retriever.lookup_gate.hold()
    setup.embedder.gate.hold()
    search = asyncio.ensure_future(setup.search("not cached", gw.CACHE_POLICY_BYPASS))
    await asyncio.wait_for(setup.embedder.gate.entered.wait(), 5)
    setup.retriever.lookup_gate.released.set()
    with pytest.raises(NotFound):
        await asyncio.wait_for(search, 5)
    await asyncio.sleep(0)
    assert setup.embedder.cancelled == 1
    assert "search" not in setup.retriever.events


async def test_an_embedder_failure_reaches_the_caller_on_a_miss_only(setup: Setup) -> None:
    await setup.search()
    setup.embedder.fail = grpc.StatusCode.UNAVAILABLE
    setup.redis.data = {k: v for k, v in setup.redis.data.items() if ":embedding:" not in k}
    reply, _ = await setup.search()
    assert reply.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    with pytest.raises(NotFound, match="embedder broke"):
        await setup.search("never asked before")


@pytest.mark.parametrize(
    "policy", [gw.CACHE_POLICY_UNSPECIFIED, gw.CACHE_POLICY_BYPASS, gw.CACHE_POLICY_REFRESH]
)
async def test_a_keyword_search_does_not_embed(setup: Setup, policy: gw.CachePolicy) -> None:
    keyword = common_pb2.SEARCH_MODE_KEYWORD
    await setup.search("warm up", policy, keyword)
    reply, stages = await setup.search("where is it?", policy, keyword)
    assert setup.embedder.calls == 0
    assert "embed" not in stages
    assert not setup.retriever.searches[-1].query_embedding
    assert reply.hits
    assert setup.redis.keys_of("embedding") == []


async def test_a_cancelled_stage_is_not_recorded_and_merged_stages_keep_their_order() -> None:
    timings, side = Timings(), Timings()

    async def slow() -> None:
        async with side.stage("embed"):
            await asyncio.sleep(10)

    async with timings.stage("collection"):
        task = asyncio.ensure_future(slow())
        async with side.stage("cache"):
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    async with timings.stage("retrieve"):
        pass
    timings.merge(side)
    assert [t.stage for t in timings.stages] == ["collection", "cache", "retrieve"]
    assert side.stages == []


def publish(setup: Setup) -> None:
    """Publishes the fake retriever's collection as it is now, as a retriever does in Redis."""
    setup.redis.data[state_key(TENANT, COLLECTION)] = setup.retriever.collection.SerializeToString()


async def test_a_published_collection_spares_the_lookup(setup: Setup) -> None:
    await setup.search()
    publish(setup)
    # Found beside a lookup: the next request waits for the state instead of asking.
    await setup.search()
    lookups = setup.retriever.events.count("lookup-start")
    reply, stages = await setup.search()
    assert setup.retriever.events.count("lookup-start") == lookups
    assert reply.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    assert stages == ["collection", "cache"]


async def test_a_newer_published_generation_is_searched_without_a_lookup(setup: Setup) -> None:
    publish(setup)
    await setup.search()
    await setup.search()
    lookups = setup.retriever.events.count("lookup-start")
    setup.retriever.collection.generation = 2
    publish(setup)
    reply, _ = await setup.search()
    assert setup.retriever.events.count("lookup-start") == lookups
    assert reply.cache_layer != gw.CACHE_LAYER_RETRIEVAL
    assert reply.hits[0].document_id == "doc-at-generation-2"


async def test_a_withdrawn_state_sends_the_request_to_the_retriever(setup: Setup) -> None:
    publish(setup)
    await setup.search()
    await setup.search()
    # A change: the retriever withdrew the state, and its database has generation 2.
    setup.retriever.collection.generation = 2
    del setup.redis.data[state_key(TENANT, COLLECTION)]
    lookups = setup.retriever.events.count("lookup-start")
    reply, _ = await setup.search()
    assert setup.retriever.events.count("lookup-start") == lookups + 1
    assert reply.generation == 2
    assert reply.hits[0].document_id == "doc-at-generation-2"
    # With no state found, the next request asks at once again, beside its cache read.
    setup.retriever.lookup_gate.hold()
    setup.redis.retrieval_read.clear()
    search = asyncio.ensure_future(setup.search())
    await asyncio.wait_for(setup.redis.retrieval_read.wait(), 5)
    assert setup.retriever.events.count("lookup-start") == lookups + 2
    setup.retriever.lookup_gate.released.set()
    assert (await search)[0].cache_layer == gw.CACHE_LAYER_RETRIEVAL


async def test_a_search_that_reads_no_cache_leaves_the_published_path_alone(setup: Setup) -> None:
    publish(setup)
    await setup.search()
    await setup.search()
    # A bypassing search looks the collection up (beside its embedding), reading no state...
    await setup.search(policy=gw.CACHE_POLICY_BYPASS)
    lookups = setup.retriever.events.count("lookup-start")
    # ...and the next warm one still takes the published state without a lookup.
    reply, _ = await setup.search()
    assert setup.retriever.events.count("lookup-start") == lookups
    assert reply.cache_layer == gw.CACHE_LAYER_RETRIEVAL


async def test_query_embeddings_bypass_the_embedders_own_cache(setup: Setup) -> None:
    # The gateway's embedding layer caches them; the embedder's cache would cost two round trips.
    await setup.search("first", gw.CACHE_POLICY_BYPASS)
    await setup.search("second")
    await setup.ask("third")
    assert [(r.input_type, r.bypass_cache) for r in setup.embedder.requests] == [
        (embedder_service_pb2.INPUT_TYPE_QUERY, True)
    ] * 3


OTHER_TENANT = "globex"


async def test_a_semantic_hit_never_serves_another_tenant_an_answer_from_the_first_ones_documents(
    setup: Setup,
) -> None:
    setup.pipeline.cache.semantic_distance = 0.08
    setup.retriever.tenant_documents = {TENANT: "acme-doc", OTHER_TENANT: "globex-doc"}
    # Both tenants have a collection of the same name; the fake embedder gives every question the
    # same vector, so every later question is a perfect paraphrase of the first.
    first = await setup.ask("Where is the Eiffel Tower?")
    assert first.answer == "from acme-doc-at-generation-1"
    paraphrase = await setup.ask("Which city is the Eiffel Tower in?")
    assert paraphrase.cache_layer == gw.CACHE_LAYER_SEMANTIC  # the layer works, for its own tenant
    for question in ("Which city is the Eiffel Tower in?", "Where is the Eiffel Tower?"):
        other = await setup.ask(question, tenant=OTHER_TENANT)
        assert other.answer == "from globex-doc-at-generation-1"
        assert setup.retriever.searches[-1].tenant == OTHER_TENANT
    assert other.cache_layer == gw.CACHE_LAYER_SEMANTIC  # its own first answer, not the other's
    assert setup.generator.calls == 2


async def test_search_results_and_query_embeddings_are_cached_per_tenant(setup: Setup) -> None:
    setup.retriever.tenant_documents = {TENANT: "acme-doc", OTHER_TENANT: "globex-doc"}
    await setup.search("wings")
    assert (await setup.search("wings"))[0].cache_layer == gw.CACHE_LAYER_RETRIEVAL
    calls = setup.embedder.calls
    other, _ = await setup.search("wings", tenant=OTHER_TENANT)
    assert other.cache_layer == gw.CACHE_LAYER_NONE  # neither the results nor the vector were shared
    assert other.hits[0].document_id == "globex-doc-at-generation-1"
    assert setup.embedder.calls == calls + 1
    assert [r.tenant for r in setup.retriever.searches] == [TENANT, OTHER_TENANT]
    assert {r.tenant for r in setup.retriever.lookups} == {TENANT, OTHER_TENANT}


async def test_a_tenant_never_reads_another_tenants_published_collection_state(setup: Setup) -> None:
    publish(setup)  # the state of acme's "docs"
    await setup.search()
    await setup.search()
    lookups = len(setup.retriever.lookups)
    assert (await setup.search())[0].cache_layer == gw.CACHE_LAYER_RETRIEVAL
    assert len(setup.retriever.lookups) == lookups  # acme's own state spared it the lookup
    reads = len(setup.redis.gets)
    for _ in range(3):
        await setup.search(tenant=OTHER_TENANT)
    # globex's "docs" is another collection: looked up at the retriever every time, by its tenant.
    assert [r.tenant for r in setup.retriever.lookups[lookups:]] == [OTHER_TENANT] * 3
    assert state_key(TENANT, COLLECTION) not in setup.redis.gets[reads:]
    assert state_key(OTHER_TENANT, COLLECTION) in setup.redis.gets[reads:]
