"""The folded posting blocks of recently searched terms, kept in the retriever's memory.

Why: at a million chunks a keyword search's terms hold about 570,000 postings (Cranfield queries,
`make bench-scale`), and even after MaxScore's pruning, moving 180,000 of them out of PostgreSQL
and decoding them took more time than scoring them. Query terms repeat from search to search, and
a term's block rows change only when the fold packs its deltas (every RETRIEVER_BM25_FOLD_SECONDS
at most, and only for the terms written since), so most searches can find every term here.

Exact in every snapshot: an entry holds one term's block rows as a snapshot saw them, under their
signature: the version (`xmin` and `ctid`) of the term's statistics row in `bm25_term_stats`. Only
the fold writes block rows, and it rewrites the statistics row of every term whose blocks it packs
again, in the same transaction (migrations 0012 and 0013), so a new version of the row comes with
every change of the term's rows. A search reads the signature of each term in its own snapshot
(`bm25_top_k`) and uses an entry only if it is equal. Blocks that have deltas not yet folded are
read from `chunk_terms` in that snapshot in place of the entry's, as without the cache. Only a term
read whole with no such blocks is held, so a term not held costs a search what it cost without the
cache. A migration that rewrites block rows must rewrite those statistics rows too.

Shared by every search of the process (the event loop runs one at a time between awaits, and no
method awaits), across the primary and its replicas, whose rows are physical copies with the same
`xmin` and `ctid`. Bounded by bytes; the least recently used terms go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter, Gauge

LOOKUPS = Counter(
    "ragline_retriever_posting_cache_lookups_total",
    "Keyword search terms looked up in the posting cache, by result: hit (its block rows were "
    "there, unchanged), stale (there, but a fold has packed some of its blocks again since: those "
    "are read) or miss (read from PostgreSQL, or looked up there).",
    ["result"],
)
CACHED_BYTES = Gauge(
    "ragline_retriever_posting_cache_bytes",
    "Memory the posting cache holds (RETRIEVER_POSTING_CACHE_BYTES at most).",
)


# A posting's chunk id (int8), term frequency (int2) and chunk length (int4).
BYTES_PER_POSTING = 14


@dataclass(frozen=True)
class Postings:
    """One term's postings, in chunk id order: chunk ids, term frequencies and chunk lengths.

    Integers, BYTES_PER_POSTING: arithmetic with a Python float turns them into float64 exactly.
    """

    ids: NDArray[np.int64]
    tfs: NDArray[np.int16]
    dls: NDArray[np.int32]

    @property
    def nbytes(self) -> int:
        """The memory its arrays hold."""
        return self.ids.nbytes + self.tfs.nbytes + self.dls.nbytes

    @staticmethod
    def joined(parts: Sequence[Postings]) -> Postings:
        """Postings of consecutive ranges of chunk ids, as one, in arrays of its own."""
        return Postings(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.tfs for p in parts]),
            np.concatenate([p.dls for p in parts]),
        )


@dataclass(frozen=True)
class Held:
    """A term's postings and, for each term frequency among them, the least chunk length: a
    posting's contribution grows with tf and falls with length, so the best of those pairs is the
    term's exact bound for any k1 and b. The statistics' bound pairs the highest tf with the least
    length of any posting, and at a million chunks it was 17% higher (median), which kept more
    terms essential."""

    parts: tuple[Postings, ...]
    """The postings, in parts of consecutive ranges of chunk ids: one, as the cache holds them; or,
    in a search that finds blocks with deltas left, the held postings around those blocks and the
    blocks packed now, which the compiled kernel reads without joining them (joining copies every
    posting of the term, 8 MB a search at a million chunks)."""
    tfs: NDArray[np.int16]
    least_dls: NDArray[np.int32]

    @cached_property
    def postings(self) -> Postings:
        """The postings as one (the parts joined once, if there are several)."""
        return self.parts[0] if len(self.parts) == 1 else Postings.joined(self.parts)

    @staticmethod
    def of(postings: Postings) -> Held:
        """`postings` with their least length per tf."""
        if not postings.tfs.size:
            return Held((postings,), postings.tfs, postings.dls)
        least = np.full(int(postings.tfs.max()) + 1, np.iinfo(np.int32).max, np.int32)
        np.minimum.at(least, postings.tfs, postings.dls)
        tfs = np.flatnonzero(least != np.iinfo(np.int32).max).astype(np.int16)
        return Held((postings,), tfs, least[tfs])

    def replaced(self, parts: Sequence[Postings], fresh: Postings) -> Held:
        """These postings replaced by `parts`, which differ from them by `fresh`: the pairs kept
        still bound what was removed, and `fresh`'s are added."""
        return Held(
            tuple(parts), np.concatenate((self.tfs, fresh.tfs)), np.concatenate((self.least_dls, fresh.dls))
        )

    def bound(self, weight: float, k1_b: float, k1_b_avgdl: float) -> float:
        """The most the term adds to any chunk's score, computed as searches compute contributions."""
        if not self.tfs.size:
            return 0.0
        return float(np.max(weight * self.tfs / (self.tfs + k1_b + k1_b_avgdl * self.least_dls)))


@dataclass
class _Entry:
    """What the cache holds of one term: its block rows' signature, their postings, the version of
    each row, and the postings of blocks with deltas left (by block: the number of delta rows then,
    and the postings), valid under that signature."""

    signature: str
    held: Held
    versions: dict[int, str]
    pending: dict[int, tuple[int, Postings]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return self.held.postings.nbytes + sum(p.nbytes for _, p in self.pending.values())


class PostingCache:
    """Terms' folded postings (`Held`) by collection and lexeme, each under its block rows' signature
    and with the version (`xmin`, `ctid`) of each block row they came from: after a fold, only the
    blocks it packed again need reading (`bm25_top_k._cached`). Also the postings of a term's blocks
    with deltas left, each under its number of delta rows."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[int, str], _Entry] = OrderedDict()

    def get(self, collection_id: int, lexeme: str, signature: str) -> Held | None:
        """The term's postings, if held under `signature` (the rows the caller's snapshot sees)."""
        entry = self._entries.get((collection_id, lexeme))
        if entry is None or entry.signature != signature:
            LOOKUPS.labels("miss" if entry is None else "stale").inc()
            return None
        self._entries.move_to_end((collection_id, lexeme))
        LOOKUPS.labels("hit").inc()
        return entry.held

    def stale(self, collection_id: int, lexeme: str) -> tuple[Held, dict[int, str]] | None:
        """What is held of the term under whatever signature, and the versions of its block rows."""
        entry = self._entries.get((collection_id, lexeme))
        return None if entry is None else (entry.held, entry.versions)

    def pending(
        self, collection_id: int, lexeme: str, signature: str, block: int, deltas: int
    ) -> Postings | None:
        """The postings of a block of the term with `deltas` delta rows, if held under `signature`."""
        entry = self._entries.get((collection_id, lexeme))
        if entry is None or entry.signature != signature:
            return None
        found = entry.pending.get(block)
        return found[1] if found is not None and found[0] == deltas else None

    def put_pending(
        self, collection_id: int, lexeme: str, signature: str, block: int, deltas: int, postings: Postings
    ) -> None:
        """Holds the postings of a block of the term with `deltas` delta rows, if the term is held
        under `signature`."""
        entry = self._entries.get((collection_id, lexeme))
        if entry is None or entry.signature != signature:
            return
        self._bytes -= entry.nbytes
        entry.pending[block] = (deltas, postings)
        self._bytes += entry.nbytes
        self._make_room()
        CACHED_BYTES.set(self._bytes)

    @property
    def room(self) -> int:
        """The bytes free before an entry must leave."""
        return self._max_bytes - self._bytes

    def put(
        self, collection_id: int, lexeme: str, signature: str, postings: Postings, versions: dict[int, str]
    ) -> Held:
        """Holds the term's postings under `signature`, with the versions of the block rows they
        came from (empty if unknown: then a later change reads every block), dropping the least
        recently used terms to make room (a term larger than the whole cache is not held); them,
        as held."""
        held = Held.of(postings)
        self._drop((collection_id, lexeme))
        if postings.nbytes > self._max_bytes:
            return held
        self._entries[collection_id, lexeme] = _Entry(signature, held, versions)
        self._bytes += postings.nbytes
        self._make_room()
        CACHED_BYTES.set(self._bytes)
        return held

    def _make_room(self) -> None:
        # The least recently used first; the most recent one stays (it fits on its own).
        while self._bytes > self._max_bytes and len(self._entries) > 1:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[int, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.nbytes
            CACHED_BYTES.set(self._bytes)
