"""The exact top k chunks of a keyword query by BM25, scored in the retriever's process with MaxScore.

Why here and not in SQL: scoring one posting as an executor row costs about 3 us (hash
aggregation, float arithmetic), and a query at a million chunks still reads 100,000+ postings
after pruning; numpy scores one in a few nanoseconds. PostgreSQL keeps the postings, their
statistics and the snapshot: the terms' weights and bounds come from the statistics the write path
maintains (`ragline_bm25_terms`, migration 0008), the postings from `ragline_bm25_postings`
(migrations 0012 and 0013: packed block rows, or `chunk_terms` for blocks with changes not yet folded), and
the caller runs every statement of a search in one REPEATABLE READ transaction, so they all read
one snapshot.

MaxScore (Turtle and Flood, 1995):
 1. A threshold: the chunks best on the highest-bound terms (the rarest, whose postings total at
    most SEED_POSTINGS, or one term's) get their full scores from the primary key of
    `chunk_terms`; the k-th best of those, theta, is at most the collection's k-th best score.
 2. The terms, lowest bound first, whose bounds add up to less than theta are non-essential: a
    chunk holding only those scores below theta, so only the other (essential) terms' postings are
    read and scored.
 3. The chunks best on the essential terms, scored fully, raise theta (at a million chunks the
    seed's theta was a third of the final 10th score on some queries). A chunk whose essential
    score plus the non-essential bounds is below theta is dropped. The others get the
    non-essential terms' contributions one term at a time, highest bound first, and are dropped
    again after each as the bounds left shrink; from the primary key of `chunk_terms`, or from
    the term's block rows when that is cheaper.
Every chunk dropped scores below theta, so the result equals a full scan's, ties broken by chunk
id. Comparisons allow 1e-9 relative for floating-point sums taken in a different order.

With a posting cache (`posting_cache.py`, the service's default), the terms it holds are not read:
their block rows come from memory, checked against the snapshot's signatures, with blocks that
have deltas left read from `chunk_terms`. When it holds every term of a search, the compiled
document-at-a-time MaxScore (`maxscore_kernel.py`) ranks them, with each term's exact bound, and
none of the steps above runs; otherwise they run, taking what the cache holds from memory. That
kernel reads nothing, so hybrid search reads its vector list while it runs (`ranking`, `beside`).

`max_postings` bounds the effort instead (hybrid search's keyword list, when not all in the cache):
while the essential terms hold more postings than that, the lowest-bound one is treated as
non-essential too. If the bounds of the terms so left out add up to theta or more (a chunk could
reach the top k on them alone), the result is the k best, by full score, of the chunks best on
the essential terms (step 3's first scoring), and no other postings are read: a top chunk whose
score comes mostly from the terms left out may be missed; the scores returned stay exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeAlias, TypeVar

import asyncpg
import numpy as np
from numpy.typing import NDArray

from ragline_retriever import maxscore_kernel
from ragline_retriever.database import PooledConnection
from ragline_retriever.maxscore_kernel import Ranking
from ragline_retriever.posting_cache import BYTES_PER_POSTING, Held, PostingCache, Postings
from ragline_retriever.postings_arrays import (
    EMPTY,
    NO_POSTINGS,
    Scored,
    add,
    best,
    blocks_replaced,
    kth,
    replace_blocks,
    subset,
    sum_by_chunk,
    within,
)
from ragline_retriever.search import QUERY_LEXEMES

# A search's connection, pooled or not (benchmarks and tests).
Connection: TypeAlias = "asyncpg.Connection[Any] | PooledConnection"
T = TypeVar("T")
# The postings the threshold's seed terms may hold together (step 1).
SEED_POSTINGS = 20_000
# The chunks scored fully for a threshold (the best on the terms read so far), per result asked for.
THRESHOLD_CHUNKS_PER_RESULT = 4
# Looking up one (chunk, term) pair in `chunk_terms` by primary key costs about as much as reading
# this many packed postings; the postings of some chunks are looked up while that is cheaper than
# reading the terms' block rows. Chosen at a million chunks with migration 0013's 8-byte postings
# (50 Cranfield queries in process, p50): 40 gave 30.5 ms, 100 28.2 ms, 200 29.3 ms.
LOOKUP_COST_POSTINGS = 100
# $1 the query text.
_TERMS_SQL = f"""
    SELECT c.avgdl, t.lexeme, t.weight, t.bound, t.df
    FROM ragline_bm25_collection($2) AS c
    JOIN ragline_bm25_terms($2, {QUERY_LEXEMES}, $3::float8, $4::float8) AS t ON true
    ORDER BY t.bound DESC, t.lexeme
"""
# The terms with, for the posting cache, the signature of each term's block rows in this snapshot
# (the version of its statistics row: `posting_cache.py`), the blocks whose deltas are not yet
# folded (read from `chunk_terms`) and how many delta rows each has (its version until the fold).
_CACHED_TERMS_SQL = f"""
    SELECT c.avgdl, t.lexeme, t.weight, t.bound, t.df,
        (SELECT s.xmin || ' ' || s.ctid FROM bm25_term_stats AS s
         WHERE s.collection_id = $2 AND s.lexeme = t.lexeme) AS signature,
        p.blocks AS pending, p.deltas AS pending_deltas
    FROM ragline_bm25_collection($2) AS c
    JOIN ragline_bm25_terms($2, {QUERY_LEXEMES}, $3::float8, $4::float8) AS t ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(g.block ORDER BY g.block) AS blocks, array_agg(g.deltas ORDER BY g.block) AS deltas
        FROM (
            SELECT d.block, count(*) AS deltas FROM bm25_term_deltas AS d
            WHERE d.collection_id = $2 AND d.lexeme = t.lexeme GROUP BY d.block
        ) AS g
    ) AS p ON true
    ORDER BY t.bound DESC, t.lexeme
"""
# Some blocks of some terms packed from `chunk_terms` ($2 and $3 their lexemes and blocks).
_PACKED_SQL = """
    SELECT lexeme, block, postings
    FROM ragline_bm25_pack(array_fill($1::bigint, ARRAY[cardinality($2::text[])]), $2::text[], $3::bigint[])
    ORDER BY 1, 2
"""
# Every block row of some terms, whatever deltas they have (what the posting cache holds), and the
# version of each row: a later fold that packs the block again writes a new row.
_BLOCKS_SQL = """
    SELECT lexeme, block, postings, xmin::text || ' ' || ctid::text AS version FROM bm25_blocks
    WHERE collection_id = $1 AND lexeme = ANY ($2::text[]) ORDER BY lexeme, block
"""
# The versions alone, to find the block rows of cached terms that a fold has written since.
_VERSIONS_SQL = """
    SELECT lexeme, block, xmin::text || ' ' || ctid::text AS version FROM bm25_blocks
    WHERE collection_id = $1 AND lexeme = ANY ($2::text[])
"""
# Some block rows: $2 and $3 their lexemes and blocks.
_SOME_BLOCKS_SQL = """
    SELECT b.lexeme, b.block, b.postings, b.xmin::text || ' ' || b.ctid::text AS version
    FROM unnest($2::text[], $3::bigint[]) AS z(lexeme, block)
    JOIN bm25_blocks AS b ON b.collection_id = $1 AND b.lexeme = z.lexeme AND b.block = z.block
    ORDER BY 1, 2
"""
_POSTINGS_SQL = "SELECT lexeme, block, postings FROM ragline_bm25_postings($1, $2::text[], $3::bigint[])"
# A block row's posting (migration 0013): the chunk id's offset in its block, tf and the chunk's length.
_RECORD = np.dtype([("offset", ">i2"), ("tf", ">i2"), ("dl", ">i4")])
_LOOKUP_SQL = """
    SELECT lexeme, array_agg(chunk_id) AS chunk_ids, array_agg(tf) AS tfs, array_agg(dl) AS dls
    FROM chunk_terms
    WHERE collection_id = $1 AND lexeme = ANY ($2::text[]) AND chunk_id = ANY ($3::bigint[])
    GROUP BY lexeme
"""


@dataclass(frozen=True)
class _Term:
    """A query term the collection holds: its weight (IDF times k1 + 1), the bound of its
    contribution to any chunk's score, and its document frequency."""

    lexeme: str
    weight: float
    bound: float
    df: float
    signature: str | None = None
    """With the posting cache: the signature of its block rows in this snapshot (`posting_cache.py`)."""
    pending: tuple[tuple[int, int], ...] = ()
    """With the posting cache: its blocks with deltas not yet folded (read from `chunk_terms`), each
    with the number of its delta rows."""


async def read_postings(
    conn: Connection, collection_id: int, lexemes: list[str], blocks: NDArray[np.int64] | None = None
) -> dict[str, Postings]:
    """The postings of the terms `lexemes` (within `blocks` of 4,096 chunk ids, if given), by lexeme,
    as searches read them: block rows, packed from `chunk_terms` where deltas are left."""
    return _decode(
        await conn.fetch(_POSTINGS_SQL, collection_id, lexemes, None if blocks is None else blocks.tolist())
    )


def _decode(rows: list[asyncpg.Record]) -> dict[str, Postings]:
    """Block rows (lexeme, block, postings), in lexeme and block order, as each term's postings."""
    by_lexeme: dict[str, tuple[list[int], list[bytes]]] = {}
    for r in rows:
        block_numbers, packed = by_lexeme.setdefault(r["lexeme"], ([], []))
        block_numbers.append(r["block"])
        packed.append(r["postings"])
    found = {}
    for lexeme, (block_numbers, packed) in by_lexeme.items():
        records = np.frombuffer(b"".join(packed), _RECORD)
        counts = [len(p) // _RECORD.itemsize for p in packed]
        starts = np.repeat(np.asarray(block_numbers, np.int64) << 12, counts)
        found[lexeme] = Postings(
            starts + records["offset"], records["tf"].astype(np.int16), records["dl"].astype(np.int32)
        )
    return found


async def _cached(
    conn: Connection, cache: PostingCache, collection_id: int, terms: list[_Term]
) -> dict[str, Held]:
    """The postings in this snapshot of the terms `cache` holds, by lexeme: as held if unchanged;
    else with the blocks a fold has packed since read again; and while the cache has room for all
    the others, those too, read whole into it. A term's blocks that have deltas left are read from
    `chunk_terms` in place of its block rows."""
    held = {}
    for term in terms:
        found = cache.get(collection_id, term.lexeme, term.signature or "")
        if found is not None:
            held[term.lexeme] = found
    stale = {}
    for term in terms:
        entry = None if term.lexeme in held or not term.signature else cache.stale(collection_id, term.lexeme)
        if entry is not None:
            stale[term.lexeme] = (term, *entry)
    if stale:
        held |= await _refreshed(conn, cache, collection_id, stale)
    unheld = [t for t in terms if t.lexeme not in held and t.signature]
    if unheld and sum(t.df for t in unheld) * BYTES_PER_POSTING <= cache.room:
        rows = await conn.fetch(_BLOCKS_SQL, collection_id, [t.lexeme for t in unheld])
        read, versions = _decode(rows), _versions(rows)
        for t in unheld:
            postings = read.get(t.lexeme, NO_POSTINGS)
            held[t.lexeme] = cache.put(
                collection_id, t.lexeme, t.signature or "", postings, versions.get(t.lexeme, {})
            )
    pending = [t for t in terms if t.pending and t.lexeme in held]
    if pending:
        packed = await _pending_blocks(conn, cache, collection_id, pending)
        for t in pending:
            blocks = np.asarray([block for block, _ in t.pending], np.int64)
            fresh = Postings.joined([packed[t.lexeme, block] for block, _ in t.pending])
            before = held[t.lexeme]
            held[t.lexeme] = before.replaced(blocks_replaced(before.postings, blocks, fresh), fresh)
    return held


async def _pending_blocks(
    conn: Connection, cache: PostingCache, collection_id: int, terms: list[_Term]
) -> dict[tuple[str, int], Postings]:
    """The postings of the blocks with deltas left of held terms `terms`, by lexeme and block: held
    with the term while the block has as many delta rows as then (a writer that changes a block's
    postings adds one, and only the fold, which changes the signature, removes them), else packed
    from `chunk_terms` and held."""
    found, wanted = {}, []
    for t in terms:
        for block, deltas in t.pending:
            postings = cache.pending(collection_id, t.lexeme, t.signature or "", block, deltas)
            if postings is None:
                wanted.append((t, block, deltas))
            else:
                found[t.lexeme, block] = postings
    if wanted:
        rows = await conn.fetch(
            _PACKED_SQL, collection_id, [t.lexeme for t, _, _ in wanted], [block for _, block, _ in wanted]
        )
        packed = {(r["lexeme"], r["block"]): _decode([r])[r["lexeme"]] for r in rows}
        for t, block, deltas in wanted:
            postings = packed.get((t.lexeme, block), NO_POSTINGS)
            cache.put_pending(collection_id, t.lexeme, t.signature or "", block, deltas, postings)
            found[t.lexeme, block] = postings
    return found


async def _refreshed(
    conn: Connection,
    cache: PostingCache,
    collection_id: int,
    stale: dict[str, tuple[_Term, Held, dict[int, str]]],
) -> dict[str, Held]:
    """`stale`'s terms (by lexeme: the term, what is held of it under an older signature, its rows'
    versions), brought to this snapshot by reading the rows whose version changed, and held again."""
    now = _versions(await conn.fetch(_VERSIONS_SQL, collection_id, list(stale)))
    changed = {}
    for lexeme, (_, _, versions) in stale.items():
        current = now.get(lexeme, {})
        gone = versions.keys() - current.keys()
        changed[lexeme] = sorted(gone | {b for b, v in current.items() if versions.get(b) != v})
    pairs = [(lexeme, block) for lexeme, blocks in changed.items() for block in blocks]
    fresh = {}
    if pairs:
        lexemes, blocks = zip(*pairs, strict=True)
        fresh = _decode(await conn.fetch(_SOME_BLOCKS_SQL, collection_id, list(lexemes), list(blocks)))
    refreshed = {}
    for lexeme, (term, held, _) in stale.items():
        blocks_changed = np.asarray(changed[lexeme], np.int64)
        postings = replace_blocks(held.postings, blocks_changed, fresh.get(lexeme, NO_POSTINGS))
        refreshed[lexeme] = cache.put(
            collection_id, lexeme, term.signature or "", postings, now.get(lexeme, {})
        )
    return refreshed


def _versions(rows: list[asyncpg.Record]) -> dict[str, dict[int, str]]:
    """The version of each block row of `rows`, by lexeme and block."""
    found: dict[str, dict[int, str]] = {}
    for r in rows:
        found.setdefault(r["lexeme"], {})[r["block"]] = r["version"]
    return found


class _Query:
    """One query's terms and BM25 parameters on one collection, and the reads it makes."""

    def __init__(
        self,
        conn: Connection,
        collection_id: int,
        terms: list[_Term],
        avgdl: float,
        k1: float,
        b: float,
        cache: PostingCache | None,
        held: dict[str, Held],
    ) -> None:
        self.conn = conn
        self.collection_id = collection_id
        self.terms = terms
        self.cache = cache
        self._held = held
        # k1 · (1 − b + b · dl / avgdl) as k1 · (1 − b) + (k1 · b / avgdl) · dl.
        self.k1_b = k1 * (1 - b)
        self.k1_b_avgdl = k1 * b / max(avgdl, 1.0)

    @cached_property
    def memory(self) -> dict[str, Postings]:
        """Every posting of the terms the cache held (`_cached`): nothing of them is read. Joined
        only here, when the kernel (which reads them in parts) does not rank them all."""
        return {lexeme: h.postings for lexeme, h in self._held.items()}

    def contributions(self, term: _Term, postings: Postings) -> NDArray[np.float64]:
        """The term's contribution to the score of each chunk of `postings`."""
        tfs = postings.tfs
        result: NDArray[np.float64] = term.weight * tfs / (tfs + self.k1_b + self.k1_b_avgdl * postings.dls)
        return result

    def sum(self, terms: list[_Term], postings: dict[str, Postings]) -> Scored:
        """Each chunk's sum of the contributions of `terms` it holds."""
        held = [t for t in terms if t.lexeme in postings]
        return sum_by_chunk(
            [postings[t.lexeme].ids for t in held], [self.contributions(t, postings[t.lexeme]) for t in held]
        )

    async def leaders(self, partial: Scored, summed: int, k: int) -> Scored:
        """The full scores of the k · THRESHOLD_CHUNKS_PER_RESULT chunks best on `partial`, their
        sums over the first `summed` terms."""
        ids = np.sort(best(partial, k * THRESHOLD_CHUNKS_PER_RESULT).ids)
        others = self.terms[summed:]
        return add(subset(partial, ids), self.sum(others, await self.postings_of(others, ids)))

    async def postings(
        self, terms: list[_Term], blocks: NDArray[np.int64] | None = None
    ) -> dict[str, Postings]:
        """The postings of `terms` (within `blocks` of 4,096 chunk ids, if given, for those read),
        by lexeme. A term read whole with no deltas left is its block rows: the cache holds them."""
        found = {t.lexeme: self.memory[t.lexeme] for t in terms if t.lexeme in self.memory}
        unread = [t for t in terms if t.lexeme not in self.memory]
        if not unread:
            return found
        read = await read_postings(self.conn, self.collection_id, [t.lexeme for t in unread], blocks)
        if self.cache is not None and blocks is None:
            for t in unread:
                if t.signature is not None and not t.pending and t.lexeme in read:
                    self.cache.put(self.collection_id, t.lexeme, t.signature, read[t.lexeme], {})
        return found | read

    async def postings_of(self, terms: list[_Term], ids: NDArray[np.int64]) -> dict[str, Postings]:
        """The postings of `terms` in the chunks `ids` (sorted), by lexeme."""
        if not terms or not ids.size:
            return {}
        found = {t.lexeme: within(self.memory[t.lexeme], ids) for t in terms if t.lexeme in self.memory}
        unread = [t for t in terms if t.lexeme not in self.memory]
        if not unread:
            return found
        if ids.size * len(unread) * LOOKUP_COST_POSTINGS > sum(t.df for t in unread):
            read = await self.postings(unread, np.unique(ids >> 12))
            return found | {lexeme: within(p, ids) for lexeme, p in read.items()}
        rows = await self.conn.fetch(
            _LOOKUP_SQL, self.collection_id, [t.lexeme for t in unread], ids.tolist()
        )
        for r in rows:
            chunk_ids = np.asarray(r["chunk_ids"], np.int64)
            order = np.argsort(chunk_ids)
            found[r["lexeme"]] = Postings(
                chunk_ids[order],
                np.asarray(r["tfs"], np.int16)[order],
                np.asarray(r["dls"], np.int32)[order],
            )
        return found


async def top_k(
    conn: Connection,
    collection_id: int,
    query_text: str,
    k: int,
    k1: float,
    b: float,
    max_postings: float = float("inf"),
    cache: PostingCache | None = None,
    threads: int = 1,
) -> Scored:
    """The k best chunks of the collection for `query_text`'s terms, best first (ties by id),
    with their exact scores (see the module's docstring); with `cache`, the postings of the terms it
    holds come from it, and when it holds them all, up to `threads` threads rank them. `conn` must
    be in a REPEATABLE READ transaction."""
    ranked = await ranking(conn, collection_id, query_text, k, k1, b, max_postings, cache, threads)
    return ranked if isinstance(ranked, Scored) else await ranked.result()


async def beside(ranking: Scored | Ranking, other: Callable[[], Awaitable[T]]) -> tuple[Scored, T]:
    """A `ranking`'s result, and what `other` returns (another statement on the search's
    connection): run while the compiled kernel ranks in threads, when it does (it reads nothing
    more). Hybrid search reads its vector list so, instead of waiting for the keyword list first."""
    if isinstance(ranking, Scored):
        return ranking, await other()
    ranked = asyncio.ensure_future(ranking.result())
    try:
        found = await other()
    finally:
        keyword = await ranked
    return keyword, found


async def ranking(
    conn: Connection,
    collection_id: int,
    query_text: str,
    k: int,
    k1: float,
    b: float,
    max_postings: float,
    cache: PostingCache | None,
    threads: int = 1,
) -> Scored | Ranking:
    """`top_k`'s result; or, when every term is in memory, the ranking that is left, which reads
    nothing (the compiled kernel, by up to `threads` threads: run it with `result`, or `beside`)."""
    rows = await conn.fetch(
        _TERMS_SQL if cache is None else _CACHED_TERMS_SQL, query_text, collection_id, k1, b
    )
    if not rows or k < 1:
        return EMPTY
    held: dict[str, Held] = {}
    if cache is None:
        terms = [_Term(r["lexeme"], r["weight"], r["bound"], r["df"]) for r in rows]
    else:
        terms = [
            _Term(
                r["lexeme"],
                r["weight"],
                r["bound"],
                r["df"],
                r["signature"] or "",
                tuple(zip(r["pending"] or (), r["pending_deltas"] or (), strict=True)),
            )
            for r in rows
        ]
        held = await _cached(conn, cache, collection_id, terms)
    query = _Query(conn, collection_id, terms, rows[0]["avgdl"], k1, b, cache, held)
    if len(held) == len(terms):
        # Nothing left to read: document at a time, compiled, with each term's exact bound. Its
        # threshold rises from the first chunks it scores: one from the seed terms first (step 1)
        # saved less than it cost (0.3 ms of 1.6 at a million chunks).
        return maxscore_kernel.ranking(
            [held[t.lexeme] for t in terms],
            [t.weight for t in terms],
            query.k1_b,
            query.k1_b_avgdl,
            k,
            threads,
        )
    seed = 1
    while seed < len(terms) and sum(t.df for t in terms[: seed + 1]) <= SEED_POSTINGS:
        seed += 1
    read = await query.postings(terms[:seed])
    seeded = query.sum(terms[:seed], read)
    if seed == len(terms):
        return best(seeded, k)
    # Step 1: the threshold.
    theta = kth(await query.leaders(seeded, seed, k), k)
    # Step 2: the essential terms.
    essential, rest = len(terms), 0.0
    essential_postings = sum(t.df for t in terms)
    while essential > 1 and (rest + terms[essential - 1].bound < theta or essential_postings > max_postings):
        essential -= 1
        rest += terms[essential].bound
        essential_postings -= terms[essential].df
    if essential > seed:
        read |= await query.postings(terms[seed:essential])
    partial = query.sum(terms[:essential], read)
    if essential == len(terms):
        return best(partial, k)
    # Step 3: the candidates, and what the non-essential terms add to them.
    leaders = await query.leaders(partial, essential, k)
    theta = max(theta, kth(leaders, k))
    if rest >= theta:
        # Only `max_postings` left out terms a top chunk may hold alone: the best leaders it is.
        return best(leaders, k)
    unread, candidates = terms[essential:], partial
    while unread:
        kept = candidates.scores + sum(t.bound for t in unread) >= theta
        candidates = Scored(candidates.ids[kept], candidates.scores[kept])
        # All the rest at once by primary key when that costs less than the next term's postings.
        cheap = candidates.ids.size * len(unread) * LOOKUP_COST_POSTINGS <= unread[0].df
        group = unread if cheap else unread[:1]
        unread = unread[len(group) :]
        candidates = add(candidates, query.sum(group, await query.postings_of(group, candidates.ids)))
    return best(candidates, k)
