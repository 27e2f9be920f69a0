"""numpy operations on postings and on per-chunk scores, for `bm25_top_k`: per-chunk sums, adding
them, the k best, and taking or replacing parts of a term's postings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ragline_retriever.posting_cache import Postings

# Dense per-chunk sums (arrays over the id range, `_DenseArrays`) while the range is at most this
# many ids per posting, and at most DENSE_MAX_IDS ids; a sort (np.unique) otherwise.
DENSE_IDS_PER_POSTING = 32
DENSE_MAX_IDS = 4_000_000
# Relative slack of the threshold, for sums taken in a different order.
SLACK = 1e-9


@dataclass(frozen=True)
class Scored:
    """Chunks and their scores (or partial sums), in chunk id order; `best` returns them best first."""

    ids: NDArray[np.int64]
    scores: NDArray[np.float64]


EMPTY = Scored(np.zeros(0, np.int64), np.zeros(0, np.float64))


class _DenseArrays:
    """Per-chunk sums and presence over a range of ids, zeroed, kept between searches.

    New arrays of a million entries cost a page fault per 4 KiB touched: at a million chunks a
    query's essential sum took 9 ms in them, against 3 ms in arrays touched before. Each sum zeroes
    the entries it set before it returns (it does not await, so searches never share them). At most
    DENSE_MAX_IDS ids: 36 MiB.
    """

    def __init__(self) -> None:
        self._sums = np.zeros(0)
        self._present = np.zeros(0, bool)

    def zeroed(self, span: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Zeroed sums and presence for `span` ids."""
        if self._sums.size < span:
            self._sums, self._present = np.zeros(span), np.zeros(span, bool)
        return self._sums[:span], self._present[:span]


_DENSE = _DenseArrays()


def sum_by_chunk(ids: list[NDArray[np.int64]], values: list[NDArray[np.float64]]) -> Scored:
    """The sum of `values` per chunk id, over arrays of ids (each without repeats: one term's
    postings) and their values."""
    if not ids or not sum(a.size for a in ids):
        return EMPTY
    low = min(int(a.min()) for a in ids if a.size)
    span = max(int(a.max()) for a in ids if a.size) - low + 1
    if span <= min(DENSE_MAX_IDS, max(DENSE_IDS_PER_POSTING * sum(a.size for a in ids), 65_536)):
        # One array at a time, by fancy indexing (an array has no repeats), with presence in a
        # boolean array: at a million ids, 2x faster than np.bincount and np.flatnonzero of its sums.
        sums, present = _DENSE.zeroed(span)
        for chunk_ids, chunk_values in zip(ids, values, strict=True):
            at = chunk_ids - low
            sums[at] += chunk_values
            present[at] = True
        where = np.flatnonzero(present)
        scored = Scored(where + low, sums[where])
        sums[where], present[where] = 0.0, False
        return scored
    unique, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    return Scored(unique, np.bincount(inverse, weights=np.concatenate(values)).astype(np.float64, copy=False))


def add(scored: Scored, more: Scored) -> Scored:
    """`scored` with the sums of `more` (whose ids are all among `scored`'s) added."""
    if not more.ids.size:
        return scored
    scores = scored.scores.copy()
    scores[np.searchsorted(scored.ids, more.ids)] += more.scores
    return Scored(scored.ids, scores)


def best(scored: Scored, k: int) -> Scored:
    """The k best of `scored`, best first, ties by chunk id."""
    if scored.ids.size > k:
        kth = np.partition(scored.scores, scored.ids.size - k)[scored.ids.size - k]
        kept = scored.scores >= kth
        scored = Scored(scored.ids[kept], scored.scores[kept])
    order = np.lexsort((scored.ids, -scored.scores))[:k]
    return Scored(scored.ids[order], scored.scores[order])


def kth(scored: Scored, k: int) -> float:
    """A lower bound of the k-th best score of the collection, from the exact scores `scored` of
    some of its chunks (0 if fewer than k)."""
    if scored.ids.size < k:
        return 0.0
    return float(np.partition(scored.scores, scored.ids.size - k)[scored.ids.size - k]) * (1 - SLACK)


def subset(scored: Scored, ids: NDArray[np.int64]) -> Scored:
    """The entries of `scored` for `ids` (sorted, all among `scored`'s)."""
    where = np.searchsorted(scored.ids, ids)
    return Scored(ids, scored.scores[where])


def within(postings: Postings, ids: NDArray[np.int64]) -> Postings:
    """The postings of the chunks `ids` (sorted)."""
    if ids.size * _SEARCH_PER_ID < postings.ids.size:
        # A binary search per id, rather than a pass over every posting.
        at = np.minimum(np.searchsorted(postings.ids, ids), postings.ids.size - 1)
        kept = at[postings.ids[at] == ids]
    else:
        kept = np.flatnonzero(np.isin(postings.ids, ids, assume_unique=True))
    return Postings(postings.ids[kept], postings.tfs[kept], postings.dls[kept])


# A binary search per id is cheaper than a pass over the postings while there are this many
# postings per id or more.
_SEARCH_PER_ID = 16
NO_POSTINGS = Postings(np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, np.int32))


def replace_blocks(folded: Postings, blocks: NDArray[np.int64], fresh: Postings) -> Postings:
    """`folded` with its postings in `blocks` (sorted) replaced by `fresh` (those blocks' postings
    now), as one."""
    return Postings.joined(blocks_replaced(folded, blocks, fresh))


def blocks_replaced(folded: Postings, blocks: NDArray[np.int64], fresh: Postings) -> list[Postings]:
    """`folded` with its postings in `blocks` (sorted) replaced by `fresh`, in parts that share
    their arrays: a block's postings are one range of each, so the parts are `folded`'s ranges
    between the blocks, each block's range of `fresh` after its own. Nothing is copied, as this
    runs in every search that finds deltas not yet folded."""
    starts = np.searchsorted(folded.ids, blocks << 12).tolist()
    ends = np.searchsorted(folded.ids, (blocks + 1) << 12).tolist()
    fresh_ends = np.searchsorted(fresh.ids, (blocks + 1) << 12).tolist()
    parts = []
    kept_from = taken_from = 0
    for start, end, fresh_end in zip(starts, ends, fresh_ends, strict=True):
        parts += [sliced(folded, kept_from, start), sliced(fresh, taken_from, fresh_end)]
        kept_from, taken_from = end, fresh_end
    parts.append(sliced(folded, kept_from, folded.ids.size))
    return [p for p in parts if p.ids.size] or [NO_POSTINGS]


def sliced(postings: Postings, start: int, stop: int) -> Postings:
    """The postings from index `start` to `stop`, sharing their arrays."""
    return Postings(postings.ids[start:stop], postings.tfs[start:stop], postings.dls[start:stop])
