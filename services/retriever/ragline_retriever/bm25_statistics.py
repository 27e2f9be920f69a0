"""Folds the BM25 statistics' delta rows into their per-collection and per-term rows, every few seconds.

The write path appends delta rows in each writer's transaction (migration 0008), so concurrent
ingests never wait on a shared counter; searches read the folded rows plus the deltas left, which
is exact in any snapshot whether or not a fold has run. Folding only keeps the deltas few, so that
a search reads one or two rows per term. Every replica folds; the database lets one fold at a time
(the others return at once), and a failed fold is logged and tried again at the next tick.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter

from ragline_retriever.database import Database, describe_error

log = logging.getLogger(__name__)

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


class StatisticsFolder:
    """Runs `fold` every `interval_seconds` from `start()` until `stop()`."""

    def __init__(self, database: Database, interval_seconds: float) -> None:
        self._db = database
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts folding in the background."""
        self._task = asyncio.create_task(self._fold_forever(), name="bm25-statistics-folder")

    async def stop(self) -> None:
        """Stops folding (a fold in progress rolls back; its deltas stay for the next)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _fold_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await fold(self._db)
            except Exception as exc:  # the folder must outlive a database outage
                log.warning("folding the BM25 statistics failed: %s", describe_error(exc))
