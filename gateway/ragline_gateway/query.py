"""A request's `ragline.v1.Query`, validated and with the configured defaults, and the cache keys built from it.

Search, Ask and AskStream all carry the same Query message; they differ only in how many
passages they may ask for, which the caller passes. Every retrieval and answer cache key holds
the collection's `generation`, so a cached result is never older than the collection's content,
and its creation time (its incarnation), as a collection deleted and created again under the same
name counts its generations from 0 again.

Every key, the embedding's included, also holds the caller's tenant: two tenants may both have a
collection named `default`, and nothing one tenant's requests cached may ever serve another's.
The tenant comes from the caller's credential, which the handler passes in; no request field
can set it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2, gateway_service_pb2
from ragline.validation import check_collection_name, check_enum, check_filter, check_text
from ragline_gateway.cache import digest
from ragline_gateway.config import GatewayConfig

# Ask gives the passages to a model with a small context window; Search may return far more.
MAX_ASK_TOP_K = 50
MAX_SEARCH_TOP_K = 1000
MAX_CANDIDATES = 1000


def _generation_settings(options: common_pb2.GenerationOptions) -> tuple[int, float, int]:
    return options.max_tokens, round(options.temperature, 3), int(options.answer_mode)


def incarnation(collection: common_pb2.Collection) -> str:
    """Which collection of its name this is: its creation time."""
    return collection.create_time.ToJsonString()


def embedding_key(tenant: str, embedding_model: str, dimension: int, text: str) -> str:
    """The embedding cache key of a tenant's query text under one model.

    The vector would be the same for every tenant, but a shared entry would let one tenant learn,
    from a hit's speed, what another has asked.
    """
    return digest(tenant, embedding_model, dimension, text)


@dataclass(frozen=True)
class Query:
    """What a Search, Ask or AskStream request asks for, validated and with defaults applied."""

    tenant: str
    """The caller's tenant, from its credential: whose collection is searched and whose caches are used."""
    collection: str
    """The collection to search, the configured default when the request names none."""
    text: str
    """The search text or question, never blank."""
    top_k: int
    """How many passages the reply holds."""
    candidates: int
    """How many candidates the retriever returns for reranking, at least `top_k`."""
    mode: common_pb2.SearchMode
    """How the retriever ranks the chunks."""
    cache_policy: gateway_service_pb2.CachePolicy
    """Whether the cache may serve and store the request."""
    filter: common_pb2.MetadataFilter | None
    """The chunks' metadata filter, None when every chunk counts."""

    @classmethod
    def parse(
        cls, message: gateway_service_pb2.Query, config: GatewayConfig, max_top_k: int, tenant: str
    ) -> Query:
        """Validates a request's query (INVALID_ARGUMENT naming the field) and fills in the configured
        defaults; `tenant` is the caller's, from its credential."""
        if not message.text.strip():
            raise InvalidArgument("the query's text is empty; send some text", field="query.text")
        check_text(message.text, "query.text", config.max_query_chars, "GATEWAY_MAX_QUERY_CHARS")
        collection = check_collection_name(
            message.collection or config.default_collection, "query.collection"
        )
        check_enum(message.mode, common_pb2.SearchMode, "query.mode")
        check_enum(message.cache_policy, gateway_service_pb2.CachePolicy, "query.cache_policy")
        if message.HasField("filter"):
            check_filter(message.filter, "query.filter")
        top_k = message.top_k or config.top_k
        if not 1 <= top_k <= max_top_k:
            raise InvalidArgument(
                f"top_k is {top_k}; it must be between 1 and {max_top_k}", field="query.top_k"
            )
        candidates = message.candidates or max(config.candidates, top_k)
        if not top_k <= candidates <= MAX_CANDIDATES:
            raise InvalidArgument(
                f"candidates is {candidates}; it must be between top_k ({top_k}) and {MAX_CANDIDATES}",
                field="query.candidates",
            )
        return cls(
            tenant,
            collection,
            message.text,
            top_k,
            candidates,
            message.mode,
            message.cache_policy,
            message.filter if message.HasField("filter") else None,
        )

    def _shape(self) -> tuple[object, ...]:
        """Everything that changes which passages are found, except the collection and the text."""
        filter_bytes = (
            self.filter.SerializeToString(deterministic=True).hex() if self.filter is not None else ""
        )
        return (self.top_k, self.candidates, int(self.mode), filter_bytes)

    def retrieval_key(self, incarnation: str, generation: int) -> str:
        """The retrieval cache key: the collection's content version and every parameter of the search."""
        return digest(self.tenant, self.collection, incarnation, generation, self.text, *self._shape())

    def answer_key(self, incarnation: str, generation: int, options: common_pb2.GenerationOptions) -> str:
        """The answer cache key: the retrieval key's parts and the generation settings."""
        return digest(
            self.tenant,
            self.collection,
            incarnation,
            generation,
            self.text,
            *self._shape(),
            *_generation_settings(options),
        )

    def semantic_scope(self, incarnation: str, generation: int, options: common_pb2.GenerationOptions) -> str:
        """The semantic cache's list: everything the answer key holds except the question's wording."""
        scope = digest(self.tenant, incarnation, *self._shape(), *_generation_settings(options))
        return f"{self.collection}:{generation}:{scope}"

    @property
    def needs_embedding(self) -> bool:
        """Whether the search itself uses the query's embedding (keyword search does not)."""
        return self.mode != common_pb2.SEARCH_MODE_KEYWORD

    @property
    def reads_cache(self) -> bool:
        """Whether the policy lets a cached result answer the request."""
        return self.cache_policy == gateway_service_pb2.CACHE_POLICY_UNSPECIFIED

    @property
    def writes_cache(self) -> bool:
        """Whether the policy lets the fresh result be stored."""
        return self.cache_policy != gateway_service_pb2.CACHE_POLICY_BYPASS
