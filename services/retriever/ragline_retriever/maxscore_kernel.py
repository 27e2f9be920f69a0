"""The exact top k of a keyword query over postings in memory, document at a time, compiled.

The loop releases the GIL (`nogil`): `bm25_top_k` runs it in threads, so that the event loop
serves other calls meanwhile, and a search's postings can be ranked by several at once, each over
a range of chunk ids (`ranking`). A chunk's postings all fall in one range, so each part's top k is
exact for its chunks and the best k of the parts' are the search's. At a million chunks two
threads took keyword p50 from 8.4 to 7.0 ms (`RETRIEVER_RANKING_THREADS`).

Why compiled: when the posting cache holds every term of a search (`posting_cache.py`), nothing is
left to read, and at a million chunks numpy's term-at-a-time sums of 200,000 postings were most of
a search's time (scattering into per-chunk arrays costs tens of nanoseconds a posting). A loop
compiled by numba visits each chunk once, and MaxScore's threshold rises as it goes.

MaxScore, document at a time (Turtle and Flood, 1995; the dynamic form of Lucene's MaxScore):
terms in ascending order of their bounds; the first of them whose bounds add up to less than the
k-th best score so far (theta) are non-essential, and only chunks that hold an essential term are
visited, in chunk id order. A visited chunk gets the essential terms' contributions, then the
non-essential ones', highest bound first, each found by a galloping search, unless its score plus
the bounds left is already below theta. Contributions are added in descending order of the
terms' bounds, as `bm25_top_k` adds them. Ties go to the lower chunk id: chunks come in id order,
so a later chunk must score strictly more than the k-th best to displace it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import numpy as np
from numba import njit
from numpy.typing import NDArray

from ragline_retriever.posting_cache import Held, Postings

# The pruning tests allow the same relative slack as `bm25_top_k`'s, for sums in another order.
from ragline_retriever.postings_arrays import SLACK, Scored, best, sliced

_NO_CHUNK = np.iinfo(np.int64).max
_ALL = (np.iinfo(np.int64).min, _NO_CHUNK)
# Postings a part of a search must hold for a thread of its own to pay: starting a thread and
# merging the parts' top k cost about 0.1 ms, ranking this many postings about as much.
MIN_POSTINGS_PER_PART = 20_000


class _Buffers(threading.local):
    """The kernel's input, every term's postings one after another, in arrays kept between searches:
    new arrays of 700,000 postings (a query's at a million chunks) cost 1-2 ms of page faults to fill,
    reused ones 0.5 ms. One set per thread: searches run the kernel in the event loop's executor."""

    def __init__(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self._tfs = np.zeros(0, np.int16)
        self._dls = np.zeros(0, np.int32)

    def sized(self, size: int) -> tuple[NDArray[np.int64], NDArray[np.int16], NDArray[np.int32]]:
        """Arrays of `size` postings."""
        if self._ids.size < size:
            self._ids, self._tfs, self._dls = (
                np.zeros(size, np.int64),
                np.zeros(size, np.int16),
                np.zeros(size, np.int32),
            )
        return self._ids[:size], self._tfs[:size], self._dls[:size]


_BUFFERS = _Buffers()


def compile_now() -> None:
    """Compiles the kernel (or loads it from numba's cache), so that no search waits for that:
    5 s the first time on this machine, then 1 s (mostly importing numba) from the cache."""
    one = Postings(np.ones(1, np.int64), np.ones(1, np.int16), np.ones(1, np.int32))
    top_k([[one]], np.ones(1), np.ones(1), 1.0, 1.0, 1)


@dataclass(frozen=True)
class Ranking:
    """A keyword search's top k, left to rank: one part per range of chunk ids, each the kernel's
    work on its own thread. The parts' chunks are disjoint and each holds all of its postings, so
    the best of their top k is the search's."""

    parts: list[partial[tuple[NDArray[np.int64], NDArray[np.float64]]]]
    """The kernel's calls, one per range."""
    k: int
    """The results asked for."""

    async def result(self) -> Scored:
        """The top k, best first (ties by id), the parts ranked at once in the event loop's executor."""
        found = await asyncio.gather(*(asyncio.to_thread(part) for part in self.parts))
        if len(found) == 1:
            return Scored(*found[0])
        return best(Scored(*(np.concatenate(arrays) for arrays in zip(*found, strict=True))), self.k)


def ranking(
    held: Sequence[Held], weights: Sequence[float], k1_b: float, k1_b_avgdl: float, k: int, threads: int
) -> Ranking:
    """The top k of the terms whose postings `held` are (weights `weights`), ranked with each term's
    exact bound, by up to `threads` threads over ranges of chunk ids of about equal postings."""
    bounds = [h.bound(w, k1_b, k1_b_avgdl) for h, w in zip(held, weights, strict=True)]
    order = sorted(range(len(held)), key=bounds.__getitem__)
    terms = [held[j].parts for j in order]
    ascending = np.asarray([weights[j] for j in order]), np.asarray([bounds[j] for j in order])
    parts = [
        partial(top_k, terms, *ascending, k1_b, k1_b_avgdl, k, low, high)
        for low, high in _ranges(terms, threads)
    ]
    return Ranking(parts, k)


def _ranges(terms: list[tuple[Postings, ...]], parts: int) -> list[tuple[int, int]]:
    """Ranges [low, high) of chunk ids that split the postings of `terms` (each in parts) into
    `parts` of about equal size, fewer if the parts would hold less than MIN_POSTINGS_PER_PART
    each. Cut at the quantiles of the longest term's ids: chunk ids are spread alike over the terms."""
    sizes = [np.cumsum([p.ids.size for p in term]) for term in terms]
    parts = max(1, min(parts, sum(int(s[-1]) for s in sizes) // MIN_POSTINGS_PER_PART))
    longest = max(range(len(terms)), key=lambda j: int(sizes[j][-1]))
    ends, pieces = sizes[longest], terms[longest]
    cuts = []
    for i in range(1, parts):
        at = int(ends[-1]) * i // parts
        piece = int(np.searchsorted(ends, at, side="right"))
        cuts.append(int(pieces[piece].ids[at - (int(ends[piece - 1]) if piece else 0)]))
    return list(pairwise([_ALL[0], *cuts, _ALL[1]]))


def top_k(
    terms: Sequence[Sequence[Postings]],
    weights: NDArray[np.float64],
    bounds: NDArray[np.float64],
    k1_b: float,
    k1_b_avgdl: float,
    k: int,
    low: int = _ALL[0],
    high: int = _ALL[1],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The k best chunks (ids and scores, best first, ties by id) with ids in [low, high) of
    `terms`, each term's postings in parts of consecutive ranges of chunk ids (chunk id order),
    whose weights are `weights` and the bounds of whose contributions are `bounds`, in ascending
    order of bound. A contribution is weight · tf / (tf + k1_b + k1_b_avgdl · dl)."""
    if (low, high) != _ALL:
        terms = [[_within(p, low, high) for p in term] for term in terms]
    starts = np.zeros(len(terms) + 1, np.int64)
    starts[1:] = np.cumsum([sum(p.ids.size for p in term) for term in terms])
    pieces = [p for term in terms for p in term]
    all_ids, all_tfs, all_dls = _BUFFERS.sized(int(starts[-1]))
    found_ids, found_scores = _top_k(
        np.concatenate([p.ids for p in pieces], out=all_ids),
        np.concatenate([p.tfs for p in pieces], out=all_tfs),
        np.concatenate([p.dls for p in pieces], out=all_dls),
        starts,
        weights,
        bounds,
        k1_b,
        k1_b_avgdl,
        k,
        SLACK,
    )
    order = np.lexsort((found_ids, -found_scores))
    return found_ids[order], found_scores[order]


def _within(postings: Postings, low: int, high: int) -> Postings:
    """The postings of chunk ids in [low, high)."""
    return sliced(postings, *np.searchsorted(postings.ids, (low, high)).tolist())


# error_model numpy: no test for a zero divisor before each division (tf >= 1 makes every one positive).
@njit(cache=True, nogil=True, error_model="numpy")
def _top_k(
    ids: NDArray[np.int64],
    tfs: NDArray[np.int16],
    dls: NDArray[np.int32],
    starts: NDArray[np.int64],
    weights: NDArray[np.float64],
    bounds: NDArray[np.float64],
    k1_b: float,
    k1_b_avgdl: float,
    k: int,
    slack: float,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    n = len(starts) - 1
    # prefix[j]: the most that terms 0..j can add to a chunk's score.
    prefix = np.cumsum(bounds)
    at = starts[:-1].copy()
    end = starts[1:]
    # A min-heap of the k best so far: the root is the worst (lowest score, then highest id).
    heap_scores = np.empty(k, np.float64)
    heap_ids = np.empty(k, np.int64)
    size = 0
    theta = 0.0  # the k-th best score so far
    first = 0  # terms[first:] are essential
    while True:
        chunk = _NO_CHUNK
        for j in range(first, n):
            if at[j] < end[j] and ids[at[j]] < chunk:
                chunk = ids[at[j]]
        if chunk == _NO_CHUNK:
            break
        score = 0.0
        for j in range(n - 1, first - 1, -1):
            p = at[j]
            if p < end[j] and ids[p] == chunk:
                tf = tfs[p]
                score += weights[j] * tf / (tf + k1_b + k1_b_avgdl * dls[p])
                at[j] = p + 1
        entered = True
        for j in range(first - 1, -1, -1):
            if score + prefix[j] < theta * (1 - slack):
                entered = False
                break
            p = _gallop(ids, at[j], end[j], chunk)
            at[j] = p
            if p < end[j] and ids[p] == chunk:
                tf = tfs[p]
                score += weights[j] * tf / (tf + k1_b + k1_b_avgdl * dls[p])
        if not entered:
            continue
        if size < k:
            heap_scores[size] = score
            heap_ids[size] = chunk
            _sift_up(heap_scores, heap_ids, size)
            size += 1
        elif score > heap_scores[0]:
            heap_scores[0] = score
            heap_ids[0] = chunk
            _sift_down(heap_scores, heap_ids, size)
        else:
            continue
        if size == k:
            theta = heap_scores[0]
            while first < n and prefix[first] < theta * (1 - slack):
                first += 1
            if first == n:
                break
    return heap_ids[:size], heap_scores[:size]


@njit(cache=True, nogil=True)
def _gallop(ids: NDArray[np.int64], start: int, n: int, chunk: int) -> int:
    """The first position from `start` on, before `n`, whose id is at least `chunk` (else `n`)."""
    step = 1
    low = start
    high = start
    while high < n and ids[high] < chunk:
        low = high + 1
        high += step
        step *= 2
    if high > n:
        high = n
    while low < high:
        middle = (low + high) // 2
        if ids[middle] < chunk:
            low = middle + 1
        else:
            high = middle
    return low


@njit(cache=True, nogil=True)
def _worse(scores: NDArray[np.float64], chunk_ids: NDArray[np.int64], a: int, b: int) -> bool:
    """Whether entry a ranks below entry b (a lower score, or the same and a higher id)."""
    return bool(scores[a] < scores[b] or (scores[a] == scores[b] and chunk_ids[a] > chunk_ids[b]))


@njit(cache=True, nogil=True)
def _swap(scores: NDArray[np.float64], chunk_ids: NDArray[np.int64], a: int, b: int) -> None:
    scores[a], scores[b] = scores[b], scores[a]
    chunk_ids[a], chunk_ids[b] = chunk_ids[b], chunk_ids[a]


@njit(cache=True, nogil=True)
def _sift_up(scores: NDArray[np.float64], chunk_ids: NDArray[np.int64], i: int) -> None:
    while i > 0:
        parent = (i - 1) // 2
        if not _worse(scores, chunk_ids, i, parent):
            break
        _swap(scores, chunk_ids, i, parent)
        i = parent


@njit(cache=True, nogil=True)
def _sift_down(scores: NDArray[np.float64], chunk_ids: NDArray[np.int64], size: int) -> None:
    i = 0
    while True:
        worst = i
        for child in (2 * i + 1, 2 * i + 2):
            if child < size and _worse(scores, chunk_ids, child, worst):
                worst = child
        if worst == i:
            break
        _swap(scores, chunk_ids, i, worst)
        i = worst
