"""Folds the BM25 statistics' delta rows into their per-collection and per-term rows, every few seconds.

The write path appends delta rows in each writer's transaction (migration 0008), so concurrent
ingests never wait on a shared counter; searches read the folded rows plus the deltas left, which
is exact in any snapshot whether or not a fold has run. Folding only keeps the deltas few, so that
a search reads one or two rows per term. Every replica folds (`periodic.Periodic`); the database lets one fold at a time
(the others return at once), and a failed fold is logged and tried again at the next tick.
"""

from __future__ import annotations

from prometheus_client import Counter

from ragline_retriever.database import Database

FOLDED_ROWS = Counter(
    "ragline_retriever_bm25_folded_rows_total",
    "BM25 statistics delta rows folded into the per-collection and per-term statistics.",
)


async def fold(database: Database) -> int:
    """Folds the delta rows committed so far, in one transaction; returns how many it folded."""
    async with database.connection() as conn, conn.transaction():
        folded: int = await conn.fetchval("SELECT ragline_bm25_fold()")
    FOLDED_ROWS.inc(folded)
    return folded
