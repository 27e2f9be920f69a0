"""Each collection's HNSW index, the vector and BM25 queries, and hybrid rank fusion.

`chunks.embedding` has no fixed dimension, so there is no single index for it: CreateStoredCollection
builds a partial expression index per collection, over `embedding::halfvec(<dimension>)` where
`collection_id = <id>`. The planner uses such an index only for a query with the same expression
and a predicate it can prove at plan time, which is why the index DDL and the vector query are
built here from the same pieces, with the id and dimension written as integer literals: with a
`$n` parameter, a cached generic plan could not prove the predicate and would scan the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from ragline.v1 import common_pb2

# Hybrid search fuses candidate lists of at least this many chunks per mode, and this is also
# pgvector's default `hnsw.ef_search`, so small top_k values lose no recall.
MIN_CANDIDATES = 40


def index_name(collection_id: int) -> str:
    """The name of a collection's HNSW index."""
    return f"chunks_embedding_hnsw_{int(collection_id)}"


def _embedding_expression(dimension: int, table: str = "") -> str:
    # The planner matches the index expression whatever alias qualifies the column.
    return f"({table}embedding::halfvec({int(dimension)}))"


def create_index_sql(collection_id: int, dimension: int, m: int, ef_construction: int) -> str:
    """DDL of a collection's cosine HNSW index (halfvec, which pgvector indexes up to 4000 dimensions).

    CONCURRENTLY, because the partial index is built by a scan of the whole shared table, which
    would otherwise block every collection's writes for as long as it takes.
    """
    return (
        f"CREATE INDEX CONCURRENTLY {index_name(collection_id)} ON chunks USING hnsw "
        f"({_embedding_expression(dimension)} halfvec_cosine_ops) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
        f"WHERE collection_id = {int(collection_id)}"
    )


def drop_index_sql(collection_id: int) -> str:
    """DDL that drops a collection's HNSW index without blocking other collections' writes."""
    return f"DROP INDEX CONCURRENTLY IF EXISTS {index_name(collection_id)}"


# The document of chunk `c`, as `d`, for the part of a statement that runs before its LIMIT. The key
# `collection_id` is in it (so a cluster distributed by collection routes the statement to one shard),
# but not as a join condition: there the planner would derive `d.collection_id = <id>` as a filter
# of its own, multiply the two selectivities, expect a few matching chunks only, and sort the whole
# collection instead of reading the HNSW index in order. OFFSET 0 keeps this subquery a per-chunk
# primary-key lookup that matches exactly one row, as the plain join on `d.id` was.
_DOCUMENT_OF_CHUNK = """LATERAL (
    SELECT d.document_id, d.metadata FROM documents AS d
    WHERE d.collection_id = c.collection_id AND d.id = c.document_id OFFSET 0
) AS d"""


def _in_collection(collection_id: int, hits: str, order: str, tenant: str) -> str:
    """A search statement that also reads the collection's generation, in the same snapshot.

    `hits` is a query of the collection's hits, with the columns of a `Hit` and a `modes` array;
    `order` sorts them, best first. $2 is the collection's name and `tenant` the placeholder of
    its tenant: the statement returns no row if `collection_id` is no longer the tenant's
    collection of that name (deleted, or deleted and created again), else one row per hit with
    the generation and the collection's creation time (a single row whose `id` is NULL when
    nothing matched), which tell a read replica's caller whether the snapshot is recent enough.
    """
    return f"""
    WITH collection AS (
        SELECT generation, created_at FROM collections
        WHERE id = {int(collection_id)} AND tenant = {tenant} AND name = $2
    ),
    hits AS MATERIALIZED ({hits})
    SELECT collection.generation, collection.created_at, hits.id, hits.document_id, hits.ordinal, hits.text, hits.metadata,
           hits.score, hits.modes
    FROM collection LEFT JOIN hits ON true
    ORDER BY {order}
    """


# The first parameter number of a compiled filter's values in `vector_search_sql` (`Params(...)`).
VECTOR_FILTER_PARAMS = 5


def vector_search_sql(collection_id: int, dimension: int, condition: str = "TRUE") -> str:
    """Nearest chunks to `$1` (the query embedding) by cosine distance, at most `$3` of them, in
    one statement with the collection's generation (`_in_collection`, $2 the collection's name,
    $4 its tenant).

    `condition` is a compiled metadata filter over METADATA_SQL, numbering its values from
    VECTOR_FILTER_PARAMS. The index scan yields at most `hnsw.ef_search` rows, unless
    `hnsw.iterative_scan` lets it go on until the filter has passed `$3` of them; with
    `relaxed_order` these come slightly out of order, hence the final sort.
    """
    distance = f"{_embedding_expression(dimension, 'c.')} <=> $1::halfvec({int(dimension)})"
    hits = f"""
        SELECT h.*, 1 - h.distance AS score, ARRAY[{int(common_pb2.SEARCH_MODE_VECTOR)}] AS modes
        FROM (
            SELECT c.id, d.document_id, c.ordinal, c.text, d.metadata || c.metadata AS metadata,
                   {distance} AS distance
            FROM chunks AS c CROSS JOIN {_DOCUMENT_OF_CHUNK}
            WHERE c.collection_id = {int(collection_id)} AND {condition}
            ORDER BY distance
            LIMIT $3
        ) AS h
    """
    return _in_collection(collection_id, hits, "hits.distance, hits.id", "$4")


# The SQL expression a metadata filter is compiled over in both queries.
METADATA_SQL = "(d.metadata || c.metadata)"

# The text search configuration that turns text into lexemes, for chunks (the trigger of migration
# 0010, which defines it) and queries alike; the one place a query's tokenisation is named.
TEXT_SEARCH_CONFIG = "ragline_english"
# The distinct lexemes of the query text $1.
QUERY_LEXEMES = f"tsvector_to_array(to_tsvector('{TEXT_SEARCH_CONFIG}', $1))"

# Okapi BM25 over the postings in `chunk_terms` (see migration 0002), with Lucene's IDF
# ln(1 + (N - df + 0.5) / (df + 0.5)), which is never negative. The query's terms are its
# lexemes (QUERY_LEXEMES: stemmed, stop words gone), each counted once, OR-ed: a chunk scores the
# sum over the terms it contains. N, the average length and every df come from the statistics the
# write path maintains (migration 0008: folded rows plus the deltas not yet folded), read in the
# query's snapshot, so they are exact without a recount.
#
# Without a filter, the retriever finds the top chunks itself (`bm25_top_k.py`, MaxScore over the
# packed postings of migration 0012) and the statements below only read their rows, in the same
# snapshot. With a filter, SQL scores every posting of every query term (`_bm25_scores`) and applies
# the filter before the LIMIT. All arithmetic is float8 (numeric arithmetic on every posting took
# 5 of a 7 ms query on Cranfield), and the length normalisation k1 · (1 − b + b · dl / avgdl) is
# k1 · (1 − b) + (k1 · b / avgdl) · dl with both constants computed once.


def _bm25_scores(collection_id: int, k1: str, b: str) -> str:
    """Every chunk of the collection holding a term of the query text $1, with its score; `k1` and
    `b` are the placeholders of BM25's parameters."""
    return f"""
        SELECT p.chunk_id,
               sum(weights.idf * p.tf / (p.tf + stats.k1_b + stats.k1_b_avgdl * p.dl)) AS score
        FROM (
            SELECT t.lexeme, t.weight AS idf
            FROM ragline_bm25_terms({int(collection_id)}, {QUERY_LEXEMES}, {k1}::float8, {b}::float8) AS t
        ) AS weights
        JOIN chunk_terms AS p ON p.collection_id = {int(collection_id)} AND p.lexeme = weights.lexeme,
        (
            SELECT {k1}::float8 * (1 - {b}::float8) AS k1_b,
                   {k1}::float8 * {b}::float8 / greatest(c.avgdl, 1) AS k1_b_avgdl
            FROM ragline_bm25_collection({int(collection_id)}) AS c
        ) AS stats
        GROUP BY p.chunk_id
    """


# The rows of hits: `{hits}` yields chunk ids and scores.
_HIT_ROWS = """
    SELECT c.id, d.document_id, c.ordinal, c.text, d.metadata || c.metadata AS metadata, hits.score,
           ARRAY[{mode}] AS modes
    FROM ({hits}) AS hits
    JOIN chunks AS c ON c.collection_id = {collection} AND c.id = hits.chunk_id
    JOIN documents AS d ON d.collection_id = c.collection_id AND d.id = c.document_id
"""


def keyword_hits_sql(collection_id: int) -> str:
    """The rows of the keyword hits `bm25_top_k` found, in one statement with the collection's
    generation (`_in_collection`): $1 their chunk ids, $2 the collection's name, $3 their scores,
    $4 its tenant."""
    hits = _HIT_ROWS.format(
        hits="SELECT * FROM unnest($1::bigint[], $3::float8[]) AS h(chunk_id, score)",
        collection=int(collection_id),
        mode=int(common_pb2.SEARCH_MODE_KEYWORD),
    )
    return _in_collection(collection_id, hits, "hits.score DESC, hits.id", "$4")


# The first parameter number of a compiled filter's values in `keyword_search_sql` (`Params(...)`).
KEYWORD_FILTER_PARAMS = 7


def keyword_search_sql(collection_id: int, condition: str) -> str:
    """Filtered BM25 search, scoring every posting of the query's terms, in one statement with the
    collection's generation (`_in_collection`): $1 query text, $2 the collection's name, $3 limit,
    $4 k1, $5 b, $6 its tenant; the compiled metadata filter `condition` numbers its values from
    KEYWORD_FILTER_PARAMS."""
    rows = _HIT_ROWS.format(
        hits=_bm25_scores(collection_id, "$4", "$5"),
        collection=int(collection_id),
        mode=int(common_pb2.SEARCH_MODE_KEYWORD),
    )
    hits = f"{rows} WHERE {condition} ORDER BY hits.score DESC, c.id LIMIT $3"
    return _in_collection(collection_id, hits, "hits.score DESC, hits.id", "$6")


# The first parameter number of a compiled filter's values in `hybrid_search_sql` (`Params(...)`).
HYBRID_FILTER_PARAMS = 12
# Ranks of keyword-only chunks come after every vector rank when fused scores tie, so the vector list wins ties.
_KEYWORD_SEEN = 1_000_000


def vector_candidates_sql(collection_id: int, dimension: int) -> str:
    """The ids of the `$2` chunks nearest to `$1` (the query embedding), in the order hybrid search
    ranks its vector list (distance, then id): the list `hybrid_search_sql` takes with
    `vector_ranked`, read while the retriever ranks the keyword list. `hnsw.ef_search` as for
    `vector_search_sql`."""
    distance = f"{_embedding_expression(dimension, 'c.')} <=> $1::halfvec({int(dimension)})"
    return f"""
        SELECT h.id FROM (
            SELECT c.id, {distance} AS distance FROM chunks AS c
            WHERE c.collection_id = {int(collection_id)} ORDER BY distance LIMIT $2
        ) AS h
        ORDER BY h.distance, h.id
    """


def hybrid_search_sql(
    collection_id: int, dimension: int, condition: str | None = None, vector_ranked: bool = False
) -> str:
    """Hybrid search in one statement: both candidate lists, their weighted rank fusion, and the rows
    of the fused top only, with the collection's generation in the same snapshot.

    Weighted reciprocal rank fusion (Cormack et al., 2009): each list adds weight / (k + rank) to
    the score of each chunk it holds. One round trip instead of one per list, reading text and
    metadata for `top_k` chunks instead of both lists. On Cranfield (top_k 10) the statement took
    2.2–2.8 ms at p50 with a generic plan (RETRIEVER_PLAN_CACHE_MODE), 3.0–3.5 ms re-planned per call;
    3.7 ms at ef_search 100, where the HNSW index is used on a collection this small only because
    migration 0011 prices the distance as measured (a scan of every chunk: 10.6 ms).

    $2 collection name, $3 candidates per list, $4 query embedding, $5 RRF k, $6 top_k, $7 vector
    weight, $8 keyword weight, $9 the collection's tenant. Without a filter, $1 is the keyword list
    `bm25_top_k` found (chunk ids, best first). With one (`condition`, over METADATA_SQL, numbering
    its values from HYBRID_FILTER_PARAMS), SQL scores the keyword list: $1 is the query text, $10
    k1 and $11 b. `hnsw.ef_search` (and, with a filter, `hnsw.iterative_scan`) must be set as for
    `vector_search_sql`. Its rows are those of `_in_collection`; `modes` lists the SearchMode
    values of the lists that found the chunk. With `vector_ranked` (no filter), $4 is the vector
    list, read before (`vector_candidates_sql`): chunk ids, nearest first.
    """
    collection = str(int(collection_id))
    distance = f"{_embedding_expression(dimension, 'c.')} <=> $4::halfvec({int(dimension)})"
    if condition is None:
        vector_from = f"chunks AS c WHERE c.collection_id = {collection}"
        keyword = "SELECT k.id, k.rank FROM unnest($1::bigint[]) WITH ORDINALITY AS k(id, rank)"
    else:
        vector_from = f"chunks AS c CROSS JOIN {_DOCUMENT_OF_CHUNK} WHERE c.collection_id = {collection} AND {condition}"
        keyword = f"""
        SELECT k.chunk_id AS id, row_number() OVER (ORDER BY k.score DESC, k.chunk_id) AS rank
        FROM (
            SELECT s.chunk_id, s.score FROM ({_bm25_scores(collection_id, "$10", "$11")}) AS s
            JOIN chunks AS c ON c.collection_id = {collection} AND c.id = s.chunk_id
            JOIN documents AS d ON d.collection_id = c.collection_id AND d.id = c.document_id
            WHERE {condition} ORDER BY s.score DESC, s.chunk_id LIMIT $3
        ) AS k"""
    vector = f"""
        SELECT h.id, row_number() OVER (ORDER BY h.distance, h.id) AS rank
        FROM (SELECT c.id, {distance} AS distance FROM {vector_from} ORDER BY distance LIMIT $3) AS h"""
    if vector_ranked:
        if condition is not None:
            raise ValueError("a filtered vector list is read in the statement")
        vector = "SELECT v.id, v.rank FROM unnest($4::bigint[]) WITH ORDINALITY AS v(id, rank) LIMIT $3"
    vector_mode, keyword_mode = int(common_pb2.SEARCH_MODE_VECTOR), int(common_pb2.SEARCH_MODE_KEYWORD)
    hits = f"""
    WITH vector AS MATERIALIZED ({vector}),
    keyword AS MATERIALIZED ({keyword}),
    fused AS (
        SELECT lists.id, sum(lists.weight / ($5::float8 + lists.rank)) AS score,
               array_agg(lists.mode ORDER BY lists.mode) AS modes, min(lists.seen) AS seen
        FROM (
            SELECT id, rank, $7::float8 AS weight, {vector_mode} AS mode, rank AS seen FROM vector
            UNION ALL
            SELECT id, rank, $8::float8, {keyword_mode}, {_KEYWORD_SEEN} + rank FROM keyword
        ) AS lists
        GROUP BY lists.id
        ORDER BY score DESC, seen
        LIMIT $6
    )
    SELECT c.id, d.document_id, c.ordinal, c.text, d.metadata || c.metadata AS metadata,
           fused.score, fused.modes, fused.seen
    FROM fused JOIN chunks AS c ON c.collection_id = {collection} AND c.id = fused.id JOIN documents AS d ON d.collection_id = c.collection_id AND d.id = c.document_id
    """
    return _in_collection(collection_id, hits, "hits.score DESC, hits.seen", "$9")


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


def hit_from_row(row: Any) -> Hit | None:
    """A hit from a row of a search statement; None for the row that only carries the generation."""
    if row["id"] is None:
        return None
    return Hit(
        row["id"],
        row["document_id"],
        row["ordinal"],
        row["text"],
        row["metadata"],
        row["score"],
        cast(list[common_pb2.SearchMode], list(row["modes"])),
    )
