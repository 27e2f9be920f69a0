"""Each collection's HNSW index, the queries that must match it, and hybrid rank fusion.

`chunks.embedding` has no fixed dimension, so there is no single index for it: CreateCollection
builds a partial expression index per collection, over `embedding::halfvec(<dimension>)` where
`collection_id = <id>`. The planner uses such an index only for a query with the same expression
and a predicate it can prove at plan time, which is why the index DDL and the vector query are
built here from the same pieces, with the id and dimension written as integer literals: with a
`$n` parameter, a cached generic plan could not prove the predicate and would scan the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ragline.v1 import common_pb2

# Reciprocal rank fusion constant from Cormack et al. (2009); it damps the weight of the top ranks.
RRF_K = 60
# Hybrid search fuses candidate lists of at least this many chunks per mode, and this is also
# pgvector's default `hnsw.ef_search`, so small top_k values lose no recall.
MIN_CANDIDATES = 40


def index_name(collection_id: int) -> str:
    """The name of a collection's HNSW index."""
    return f"chunks_embedding_hnsw_{int(collection_id)}"


def _embedding_expression(dimension: int) -> str:
    return f"(embedding::halfvec({int(dimension)}))"


def create_index_sql(collection_id: int, dimension: int, m: int, ef_construction: int) -> str:
    """DDL of a collection's cosine HNSW index (halfvec, which pgvector indexes up to 4000 dimensions)."""
    return (
        f"CREATE INDEX {index_name(collection_id)} ON chunks USING hnsw "
        f"({_embedding_expression(dimension)} halfvec_cosine_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE collection_id = {int(collection_id)}"
    )


def drop_index_sql(collection_id: int) -> str:
    """DDL that drops a collection's HNSW index."""
    return f"DROP INDEX IF EXISTS {index_name(collection_id)}"


def vector_search_sql(collection_id: int, dimension: int) -> str:
    """Nearest chunks to `$1` (the query embedding) by cosine distance, at most `$2` of them.

    Needs `hnsw.ef_search` at least `$2`, since the index scan returns no more than that.
    """
    distance = f"{_embedding_expression(dimension)} <=> $1::halfvec({int(dimension)})"
    return f"""
        SELECT h.id, d.document_id, h.ordinal, h.text, d.metadata || h.metadata AS metadata,
               1 - h.distance AS score
        FROM (
            SELECT id, document_id, ordinal, text, metadata, {distance} AS distance
            FROM chunks
            WHERE collection_id = {int(collection_id)}
            ORDER BY {distance}
            LIMIT $2
        ) AS h
        JOIN documents AS d ON d.id = h.document_id
        ORDER BY h.distance, h.id
    """


# The query's lexemes (stemmed, stop words gone) joined with OR, so a chunk matching any term
# qualifies and ts_rank_cd ranks those matching more of them higher. The tsquery is assembled
# in SQL from to_tsvector's output, each lexeme quoted with its quotes and backslashes escaped,
# so no query text ever becomes tsquery syntax. No lexemes at all give NULL, which matches nothing.
KEYWORD_SEARCH_SQL = r"""
    WITH query AS (
        SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
               AS q
        FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS lexeme
    )
    SELECT c.id, d.document_id, c.ordinal, c.text, d.metadata || c.metadata AS metadata,
           ts_rank_cd(c.tsv, query.q) AS score
    FROM query
    JOIN chunks AS c ON c.tsv @@ query.q
    JOIN documents AS d ON d.id = c.document_id
    WHERE c.collection_id = $2
    ORDER BY score DESC, c.id
    LIMIT $3
"""


@dataclass
class Hit:
    """A chunk found by a search, its score, and the modes (SearchMode values) that found it."""

    chunk_id: int
    document_id: str
    ordinal: int
    text: str
    metadata: dict[str, Any]
    score: float
    modes: list[common_pb2.SearchMode] = field(default_factory=list)


def hit_from_row(row: Any, mode: common_pb2.SearchMode) -> Hit:
    """A hit from a row of `vector_search_sql` or `KEYWORD_SEARCH_SQL`."""
    return Hit(
        row["id"], row["document_id"], row["ordinal"], row["text"], row["metadata"], row["score"], [mode]
    )


def fuse(ranked_lists: list[list[Hit]], top_k: int) -> list[Hit]:
    """Reciprocal rank fusion: each list adds 1 / (RRF_K + rank) to its chunks' scores.

    Ties keep the order in which chunks were first seen, so the earlier list wins them.
    """
    fused: dict[int, Hit] = {}
    for hits in ranked_lists:
        for rank, hit in enumerate(hits, start=1):
            contribution = 1.0 / (RRF_K + rank)
            seen = fused.get(hit.chunk_id)
            if seen is None:
                fused[hit.chunk_id] = Hit(
                    hit.chunk_id,
                    hit.document_id,
                    hit.ordinal,
                    hit.text,
                    hit.metadata,
                    contribution,
                    list(hit.modes),
                )
            else:
                seen.score += contribution
                seen.modes.extend(m for m in hit.modes if m not in seen.modes)
    return sorted(fused.values(), key=lambda h: -h.score)[:top_k]
