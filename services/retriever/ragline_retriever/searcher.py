"""Runs a validated search against PostgreSQL: the statement of `search.py` for its mode, with the
HNSW scan it needs and, for an unfiltered keyword list, the ranking `bm25_top_k` does first in the
same snapshot, on a collection whose id and dimension are remembered between searches.

The statements embed the collection's id and dimension as literals (see `search.py`), so a
search needs them first; remembering them saves a round trip per search, and a statement that
finds them stale (the collection was deleted, perhaps created again) is run once more after a
fresh lookup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from google.protobuf import timestamp_pb2
from numpy.typing import NDArray
from prometheus_client import Counter, Histogram

from ragline.errors import FailedPrecondition, NotFound
from ragline.metrics import LATENCY_BUCKETS, search_mode_label
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline_retriever import bm25_top_k, maxscore_kernel
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import Database, PooledConnection, describe_error
from ragline_retriever.filters import Params, compile_filter
from ragline_retriever.posting_cache import PostingCache
from ragline_retriever.postings_arrays import Scored
from ragline_retriever.read_replicas import REPLICA_ERRORS, ReadReplicas
from ragline_retriever.search import (
    HYBRID_FILTER_PARAMS,
    KEYWORD_FILTER_PARAMS,
    METADATA_SQL,
    MIN_CANDIDATES,
    VECTOR_FILTER_PARAMS,
    Hit,
    hit_from_row,
    hybrid_search_sql,
    keyword_hits_sql,
    keyword_search_sql,
    vector_candidates_sql,
    vector_search_sql,
)
from ragline_retriever.validation import ValidSearch, validate_embedding

SEARCHES = Counter(
    "ragline_retriever_searches_total",
    "Searches answered, by the database that answered them: primary or replica.",
    ["database"],
)
REPLICA_FALLBACKS = Counter(
    "ragline_retriever_read_replica_fallbacks_total",
    "Searches a read replica was asked and the primary answered, by reason: behind (not yet at the "
    "caller's generation), unavailable (the replica failed; it left rotation) or conflict (replay "
    "cancelled the statement).",
    ["reason"],
)
QUERY_SECONDS = Histogram(
    "ragline_retriever_query_seconds",
    "Time the database took to answer one search, by search mode.",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)

# Collections whose id and dimension hybrid search remembers.
MAX_LOCATED_COLLECTIONS = 10_000

# The first parameter number of a compiled filter's values in each mode's statement.
_FILTER_PARAMS = {
    common_pb2.SEARCH_MODE_VECTOR: VECTOR_FILTER_PARAMS,
    common_pb2.SEARCH_MODE_KEYWORD: KEYWORD_FILTER_PARAMS,
    common_pb2.SEARCH_MODE_HYBRID: HYBRID_FILTER_PARAMS,
}


@dataclass(frozen=True)
class _Located:
    """What a search needs to know of a collection before its one statement."""

    id: int
    dimension: int
    embedding_model: str


@dataclass(frozen=True)
class _Search:
    """One SearchChunks call, validated, with its filter compiled."""

    request: pb.SearchChunksRequest
    valid: ValidSearch
    condition: str | None
    params: Params


def _recent_enough(row: asyncpg.Record, request: pb.SearchChunksRequest) -> bool:
    """Whether a search's snapshot holds the collection `request` was told about, at its
    `min_generation` or later."""
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(row["created_at"])
    return created == request.collection_create_time and row["generation"] >= request.min_generation


def _candidates(valid: ValidSearch) -> int:
    """The length of each list hybrid search fuses: fusion needs deeper lists than top_k to rank well."""
    return max(valid.top_k, MIN_CANDIDATES)


def _fits(located: _Located, request: pb.SearchChunksRequest) -> bool:
    """Whether the query vector can be the remembered collection's: its dimension, and its model if named."""
    model_fits = not request.embedding_model or request.embedding_model == located.embedding_model
    return model_fits and located.dimension == len(request.query_embedding)


class Searcher:
    """Searches the collections of `database` (or of its read replicas), remembering where each collection is."""

    def __init__(
        self, config: RetrieverConfig, database: Database, replicas: ReadReplicas | None = None
    ) -> None:
        self._config = config
        self._db = database
        self._replicas = replicas
        # By tenant and name: two tenants' collections of the same name are different collections.
        self._located: dict[tuple[str, str], _Located] = {}
        self._postings = None
        if config.posting_cache_bytes:
            self._postings = PostingCache(config.posting_cache_bytes)
            maxscore_kernel.compile_now()

    async def search(self, request: pb.SearchChunksRequest, valid: ValidSearch) -> tuple[list[Hit], int]:
        """The hits of a search and the generation of the snapshot it read (`_run`), which needs the collection's id and dimension: remembered from the
        collection's previous search, and looked up again when the statement finds them stale."""
        started = time.perf_counter()
        mode = valid.mode
        # Compiled before touching the database; `validate_search` checked the filter whole, so this cannot fail.
        params = Params(_FILTER_PARAMS[mode])
        condition = (
            compile_filter(request.filter, METADATA_SQL, params) if request.HasField("filter") else None
        )
        search = _Search(request, valid, condition, params)
        rows = await self._on_replica(self._replicas, search) if self._replicas is not None else None
        if rows is None:
            rows = await self._on_primary(search)
        QUERY_SECONDS.labels(search_mode_label(mode)).observe(time.perf_counter() - started)
        hits = [hit for hit in map(hit_from_row, rows) if hit is not None]
        return hits, rows[0]["generation"]

    async def _on_primary(self, search: _Search) -> list[asyncpg.Record]:
        """The rows of `search` on the primary; NOT_FOUND if the collection does not exist."""
        request, tenant, name, mode = (
            search.request,
            search.valid.tenant,
            search.valid.name,
            search.valid.mode,
        )
        async with self._db.connection() as conn:
            located = self._located.get((tenant, name))
            # A remembered dimension the embedding does not match may belong to a deleted collection.
            embeds = mode != common_pb2.SEARCH_MODE_KEYWORD
            if located is None or (embeds and not _fits(located, request)):
                located = await self._locate(conn, tenant, name)
            rows = await self._run(conn, search, located)
            if not rows:
                # The id no longer names the collection `name` (deleted, perhaps created again).
                rows = await self._run(conn, search, await self._locate(conn, tenant, name))
        if not rows:
            raise NotFound(f"collection {name!r} does not exist", field="collection")
        SEARCHES.labels("primary").inc()
        return rows

    async def _on_replica(self, replicas: ReadReplicas, search: _Search) -> list[asyncpg.Record] | None:
        """The rows of `search` on a replica in rotation, if one has the collection the caller was
        told about at its generation or later, read in the same snapshot as the hits; None when
        the primary must answer.

        Only a search that names the collection's creation time may read a replica: a replica
        behind a deletion would otherwise answer for the collection deleted since. The primary
        looks collections up, so that a replica behind a creation cannot hide the new one.
        """
        request, valid = search.request, search.valid
        located = self._located.get((valid.tenant, valid.name))
        if not request.HasField("collection_create_time") or located is None:
            return None
        if valid.mode != common_pb2.SEARCH_MODE_KEYWORD and not _fits(located, request):
            return None  # perhaps a collection created again or migrated since: the primary finds out
        replica = replicas.pick()
        if replica is None:
            return None
        try:
            async with replicas.connection(replica) as conn:
                rows = await self._run(conn, search, located)
        except asyncpg.TransactionRollbackError:
            # Replay cancelled the statement (a conflict on the standby): the replica is well.
            REPLICA_FALLBACKS.labels("conflict").inc()
            return None
        except REPLICA_ERRORS as exc:
            replicas.take_out(replica, describe_error(exc))
            REPLICA_FALLBACKS.labels("unavailable").inc()
            return None
        if not rows or not _recent_enough(rows[0], request):
            REPLICA_FALLBACKS.labels("behind").inc()
            return None
        SEARCHES.labels("replica").inc()
        return rows

    async def _run(self, conn: PooledConnection, search: _Search, located: _Located) -> list[asyncpg.Record]:
        """The rows of `search`'s statement on the collection `located`; none if that id no longer
        names the collection.

        Without a filter, the retriever ranks the keyword list itself (`bm25_top_k`) before the
        statement, in the statement's snapshot.
        """
        valid, options = search.valid, search.valid.options
        filtered = search.condition is not None
        query = None if valid.mode == common_pb2.SEARCH_MODE_KEYWORD else self._query(search, located)
        ef_search = None
        if valid.mode == common_pb2.SEARCH_MODE_VECTOR:
            ef_search = max(valid.top_k, options.ef_search)
        elif valid.mode == common_pb2.SEARCH_MODE_HYBRID:
            ef_search = max(_candidates(valid), options.ef_search)
        ranks_keywords = valid.mode != common_pb2.SEARCH_MODE_VECTOR and not filtered
        if not ranks_keywords and (ef_search is None or self._session_scan(ef_search, filtered)):
            # One round trip, in one snapshot.
            sql, args = self._statement(search, located, query, None, None)
            return await conn.fetch(sql, *args)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            if ef_search is not None:
                await self._set_scan(conn, ef_search, filtered)
            keyword, vector = None, None
            if ranks_keywords and valid.mode == common_pb2.SEARCH_MODE_KEYWORD:
                keyword = await bm25_top_k.top_k(
                    conn,
                    located.id,
                    search.request.query_text,
                    valid.top_k,
                    options.bm25_k1,
                    options.bm25_b,
                    cache=self._postings,
                    threads=self._config.ranking_threads,
                )
            elif ranks_keywords:
                # Hybrid: the vector list is read while the keyword list is ranked.
                candidates = _candidates(valid)
                candidates_sql = vector_candidates_sql(located.id, located.dimension)
                ranking = await bm25_top_k.ranking(
                    conn,
                    located.id,
                    search.request.query_text,
                    candidates,
                    options.bm25_k1,
                    options.bm25_b,
                    self._config.hybrid_keyword_max_postings or float("inf"),
                    self._postings,
                    self._config.ranking_threads,
                )
                keyword, rows = await bm25_top_k.beside(
                    ranking, lambda: conn.fetch(candidates_sql, query, candidates)
                )
                vector = [r["id"] for r in rows]
            sql, args = self._statement(search, located, query, keyword, vector)
            return await conn.fetch(sql, *args)

    def _query(self, search: _Search, located: _Located) -> NDArray[np.float32]:
        """The query embedding, checked against the collection `located`."""
        request, name = search.request, search.valid.name
        # A collection id never changes model (a migration makes a new one), so the statement's
        # check of the id also checks this.
        if request.embedding_model and request.embedding_model != located.embedding_model:
            raise FailedPrecondition(
                f"collection {name!r} holds vectors of {located.embedding_model} now, not of "
                f"{request.embedding_model} (it was moved to that model); embed the query with it and retry",
                field="embedding_model",
                reason="EMBEDDING_MODEL_CHANGED",
            )
        return validate_embedding(request.query_embedding, located.dimension, "query_embedding", name)

    @staticmethod
    def _statement(
        search: _Search,
        located: _Located,
        query: NDArray[np.float32] | None,
        keyword: Scored | None,
        vector: list[int] | None,
    ) -> tuple[str, tuple[Any, ...]]:
        """`search`'s statement (`search.py`) and its arguments, given its query embedding and, if
        the retriever ranked it, its keyword list (and then, for hybrid search, its vector list)."""
        request, valid, options = search.request, search.valid, search.valid.options
        filters = search.params.values
        if valid.mode == common_pb2.SEARCH_MODE_KEYWORD:
            if keyword is not None:
                hits = (keyword.ids.tolist(), valid.name, keyword.scores.tolist(), valid.tenant)
                return keyword_hits_sql(located.id), hits
            sql = keyword_search_sql(located.id, search.condition or "TRUE")
            return sql, (
                request.query_text,
                valid.name,
                valid.top_k,
                options.bm25_k1,
                options.bm25_b,
                valid.tenant,
                *filters,
            )
        if valid.mode == common_pb2.SEARCH_MODE_VECTOR:
            sql = vector_search_sql(located.id, located.dimension, search.condition or "TRUE")
            return sql, (query, valid.name, valid.top_k, valid.tenant, *filters)
        fused = (
            float(options.rrf_k),
            valid.top_k,
            options.vector_weight,
            options.keyword_weight,
            valid.tenant,
        )
        if keyword is not None and vector is not None:
            sql = hybrid_search_sql(located.id, located.dimension, vector_ranked=True)
            return sql, (keyword.ids.tolist(), valid.name, _candidates(valid), vector, *fused)
        sql = hybrid_search_sql(located.id, located.dimension, search.condition)
        return sql, (
            request.query_text,
            valid.name,
            _candidates(valid),
            query,
            *fused,
            options.bm25_k1,
            options.bm25_b,
            *filters,
        )

    async def _locate(self, conn: PooledConnection, tenant: str, name: str) -> _Located:
        """The id and dimension of `tenant`'s collection `name` (NOT_FOUND if none), remembered for
        later searches."""
        row = await conn.fetchrow(
            "SELECT id, dimension, embedding_model FROM collections WHERE tenant = $1 AND name = $2",
            tenant,
            name,
        )
        if row is None:
            self._located.pop((tenant, name), None)
            raise NotFound(f"collection {name!r} does not exist", field="collection")
        if len(self._located) >= MAX_LOCATED_COLLECTIONS:
            self._located.clear()
        located = self._located[tenant, name] = _Located(row["id"], row["dimension"], row["embedding_model"])
        return located

    def _session_scan(self, ef_search: int, filtered: bool) -> bool:
        """Whether the session's HNSW scan settings (see Database) are those a search needs."""
        return ef_search == self._config.hnsw_ef_search and not filtered

    async def _set_scan(self, conn: PooledConnection, ef_search: int, filtered: bool) -> None:
        """Sets the HNSW scan of the transaction's vector query where it differs from the session's.

        Without an iterative scan the HNSW scan yields at most ef_search rows, so ef_search is
        never below the rows asked for; with a filter it goes on until enough rows pass it.
        """
        if ef_search != self._config.hnsw_ef_search:
            await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", str(ef_search))
        if filtered:
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
