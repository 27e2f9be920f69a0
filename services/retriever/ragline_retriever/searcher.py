"""Runs a validated search against PostgreSQL: the one statement of `search.py` for its mode, with the
HNSW scan it needs, on a collection whose id and dimension are remembered between searches.

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
from prometheus_client import Histogram

from ragline.errors import NotFound
from ragline.metrics import LATENCY_BUCKETS, search_mode_label
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import Database, PooledConnection
from ragline_retriever.filters import Params, compile_filter
from ragline_retriever.search import (
    HYBRID_FILTER_PARAMS,
    KEYWORD_FILTER_PARAMS,
    METADATA_SQL,
    MIN_CANDIDATES,
    VECTOR_FILTER_PARAMS,
    Hit,
    hit_from_row,
    hybrid_search_sql,
    keyword_search_sql,
    vector_search_sql,
)
from ragline_retriever.validation import ValidSearch, validate_embedding

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


@dataclass(frozen=True)
class _Search:
    """One SearchChunks call, validated, with its filter compiled."""

    request: pb.SearchChunksRequest
    valid: ValidSearch
    condition: str | None
    params: Params


class Searcher:
    """Searches the collections of `database`, remembering where each collection is."""

    def __init__(self, config: RetrieverConfig, database: Database) -> None:
        self._config = config
        self._db = database
        # By tenant and name: two tenants' collections of the same name are different collections.
        self._located: dict[tuple[str, str], _Located] = {}

    async def search(self, request: pb.SearchChunksRequest, valid: ValidSearch) -> tuple[list[Hit], int]:
        """The hits of a search and the generation of the snapshot it read, in one statement
        (`search.py`), which needs the collection's id and dimension: remembered from the
        collection's previous search, and looked up again when the statement finds them stale."""
        started = time.perf_counter()
        tenant, name, mode = valid.tenant, valid.name, valid.mode
        # Compiled before touching the database; `validate_search` checked the filter whole, so this cannot fail.
        params = Params(_FILTER_PARAMS[mode])
        condition = (
            compile_filter(request.filter, METADATA_SQL, params) if request.HasField("filter") else None
        )
        async with self._db.connection() as conn:
            located = self._located.get((tenant, name))
            # A remembered dimension the embedding does not match may belong to a deleted collection.
            embeds = mode != common_pb2.SEARCH_MODE_KEYWORD
            if located is None or (embeds and located.dimension != len(request.query_embedding)):
                located = await self._locate(conn, tenant, name)
            search = _Search(request, valid, condition, params)
            rows = await self._run(conn, search, located)
            if not rows:
                # The id no longer names the collection `name` (deleted, perhaps created again).
                rows = await self._run(conn, search, await self._locate(conn, tenant, name))
        if not rows:
            raise NotFound(f"collection {name!r} does not exist", field="collection")
        QUERY_SECONDS.labels(search_mode_label(mode)).observe(time.perf_counter() - started)
        hits = [hit for hit in map(hit_from_row, rows) if hit is not None]
        return hits, rows[0]["generation"]

    async def _run(self, conn: PooledConnection, search: _Search, located: _Located) -> list[asyncpg.Record]:
        """The rows of `search`'s statement on the collection `located`; none if that id no longer
        names the collection."""
        request, valid, options = search.request, search.valid, search.valid.options
        ef_search = None
        if valid.mode == common_pb2.SEARCH_MODE_KEYWORD:
            sql = keyword_search_sql(located.id, search.condition)
            args: tuple[Any, ...] = (
                request.query_text,
                valid.name,
                valid.top_k,
                options.bm25_k1,
                options.bm25_b,
                valid.tenant,
            )
        else:
            query = validate_embedding(
                request.query_embedding, located.dimension, "query_embedding", valid.name
            )
            if valid.mode == common_pb2.SEARCH_MODE_VECTOR:
                sql = vector_search_sql(located.id, located.dimension, search.condition or "TRUE")
                args = (query, valid.name, valid.top_k, valid.tenant)
                ef_search = max(valid.top_k, options.ef_search)
            else:
                # Fusion needs deeper lists than top_k to rank well.
                candidates = max(valid.top_k, MIN_CANDIDATES)
                sql = hybrid_search_sql(located.id, located.dimension, search.condition)
                args = (
                    request.query_text,
                    valid.name,
                    candidates,
                    options.bm25_k1,
                    options.bm25_b,
                    query,
                    float(options.rrf_k),
                    valid.top_k,
                    options.vector_weight,
                    options.keyword_weight,
                    valid.tenant,
                )
                ef_search = max(candidates, options.ef_search)
        args = (*args, *search.params.values)
        filtered = search.condition is not None
        if ef_search is None or self._session_scan(ef_search, filtered):
            # One round trip, in one snapshot.
            return await conn.fetch(sql, *args)
        async with conn.transaction(readonly=True):
            await self._set_scan(conn, ef_search, filtered)
            return await conn.fetch(sql, *args)

    async def _locate(self, conn: PooledConnection, tenant: str, name: str) -> _Located:
        """The id and dimension of `tenant`'s collection `name` (NOT_FOUND if none), remembered for
        later searches."""
        row = await conn.fetchrow(
            "SELECT id, dimension FROM collections WHERE tenant = $1 AND name = $2", tenant, name
        )
        if row is None:
            self._located.pop((tenant, name), None)
            raise NotFound(f"collection {name!r} does not exist", field="collection")
        if len(self._located) >= MAX_LOCATED_COLLECTIONS:
            self._located.clear()
        located = self._located[tenant, name] = _Located(row["id"], row["dimension"])
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
