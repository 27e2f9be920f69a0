"""The posting cache (`posting_cache.py`) and the numpy steps that use it in `bm25_top_k`: taking
some chunks' postings, and replacing the blocks with deltas left."""

from __future__ import annotations

import numpy as np
import pytest

from ragline_retriever.posting_cache import LOOKUPS, Held, PostingCache, Postings
from ragline_retriever.postings_arrays import blocks_replaced, replace_blocks, within


def _postings(ids: list[int], tf: int = 1) -> Postings:
    return Postings(
        np.asarray(ids, np.int64), np.full(len(ids), tf, np.int16), np.asarray(ids, np.int32) % 97 + 1
    )


def _lookups(result: str) -> float:
    return float(LOOKUPS.labels(result)._value.get())


def test_a_term_is_held_only_under_its_signature() -> None:
    cache = PostingCache(10_000)
    held = _postings([1, 5, 9])
    cache.put(7, "flow", "rows-1", held, {0: "1 (0,1)"})
    hits, misses = _lookups("hit"), _lookups("miss")
    assert cache.get(7, "flow", "rows-1").postings is held  # type: ignore[union-attr]
    assert cache.get(8, "flow", "rows-1") is None  # another collection's term
    assert (_lookups("hit") - hits, _lookups("miss") - misses) == (1, 1)
    assert cache.room == 10_000 - held.nbytes
    # The fold packed some of its blocks again since: not a hit, but kept with the versions of its
    # rows, so that only the blocks changed are read; held again under the new signature.
    stale = _lookups("stale")
    assert cache.get(7, "flow", "rows-2") is None
    assert _lookups("stale") - stale == 1
    kept, versions = cache.stale(7, "flow")  # type: ignore[misc]
    assert kept.postings is held and versions == {0: "1 (0,1)"}
    cache.put(7, "flow", "rows-2", _postings([1, 5]), {0: "2 (0,2)"})
    assert cache.room == 10_000 - _postings([1, 5]).nbytes
    assert cache.get(7, "flow", "rows-1") is None
    assert cache.get(7, "flow", "rows-2").postings.ids.tolist() == [1, 5]  # type: ignore[union-attr]


def test_a_held_term_bounds_its_contributions_exactly() -> None:
    # tf 3 at length 40 and tf 1 at length 2: neither the highest tf nor the least length alone.
    postings = Postings(
        np.array([1, 2, 3], np.int64), np.array([3, 1, 3], np.int16), np.array([40, 2, 60], np.int32)
    )
    held = PostingCache(10_000).put(1, "flow", "s", postings, {})
    contributions = 2.0 * postings.tfs / (postings.tfs + 0.3 + 0.02 * postings.dls)
    assert held.bound(2.0, 0.3, 0.02) == float(contributions.max())
    assert held.bound(2.0, 0.3, 0.5) == float(
        (2.0 * postings.tfs / (postings.tfs + 0.3 + 0.5 * postings.dls)).max()
    )
    # Replaced blocks: what was removed still bounds, what came in is counted.
    fresh = Postings(np.array([9000], np.int64), np.array([7], np.int16), np.array([7], np.int32))
    assert held.replaced([postings], fresh).bound(2.0, 0.3, 0.02) == 2.0 * 7 / (7 + 0.3 + 0.02 * 7)


def test_the_least_recently_used_terms_leave_first_within_the_bytes_given() -> None:
    one = _postings(list(range(100)))  # 1,400 bytes
    cache = PostingCache(3 * one.nbytes)
    for lexeme in "abc":
        cache.put(1, lexeme, "s", _postings(list(range(100))), {})
    assert cache.get(1, "a", "s") is not None  # now b is the least recently used
    cache.put(1, "d", "s", one, {})
    assert [cache.get(1, lexeme, "s") is not None for lexeme in "abcd"] == [True, False, True, True]
    cache.put(1, "huge", "s", _postings(list(range(1000))), {})  # larger than the whole cache: not held
    assert cache.get(1, "huge", "s") is None
    assert cache.get(1, "d", "s") is not None


@pytest.mark.parametrize("wanted", [[3, 4096, 9000], list(range(0, 12000, 2))], ids=["few", "many"])
def test_within_takes_exactly_the_postings_of_the_chunks_asked(wanted: list[int]) -> None:
    # Few chunks by binary search, many by one pass; chunks without the term are left out.
    postings = _postings(list(range(0, 12000, 3)), tf=2)
    found = within(postings, np.asarray(wanted, np.int64))
    expected = [i for i in wanted if i % 3 == 0]
    assert found.ids.tolist() == expected
    assert found.dls.tolist() == [i % 97 + 1 for i in expected]
    assert found.tfs.tolist() == [2] * len(expected)


def test_replacing_blocks_keeps_the_others_and_the_chunk_id_order() -> None:
    # Blocks are 4,096 chunk ids. Block 1 lost a posting and gained one; block 3 is new.
    folded = _postings([5, 4100, 4200, 9000, 9001])
    fresh = _postings([4150, 4200, 12300], tf=3)
    found = replace_blocks(folded, np.array([1, 3], np.int64), fresh)
    assert found.ids.tolist() == [5, 4150, 4200, 9000, 9001, 12300]
    assert found.tfs.tolist() == [1, 3, 3, 1, 1, 3]
    assert found.dls.tolist() == [i % 97 + 1 for i in found.ids.tolist()]
    emptied = replace_blocks(folded, np.array([1], np.int64), _postings([]))
    assert emptied.ids.tolist() == [5, 9000, 9001]
    # In parts, as a search ranks them: the same postings, in arrays shared with the two given.
    parts = blocks_replaced(folded, np.array([1, 3], np.int64), fresh)
    assert [p.ids.tolist() for p in parts] == [[5], [4150, 4200], [9000, 9001], [12300]]
    assert all(np.shares_memory(p.ids, folded.ids) or np.shares_memory(p.ids, fresh.ids) for p in parts)
    held = Held.of(folded).replaced(parts, fresh)
    assert held.postings.ids.tolist() == found.ids.tolist()
    assert not np.shares_memory(found.ids, folded.ids)  # the cache holds it: arrays of its own


def test_blocks_with_deltas_are_held_with_their_term_and_counted_in_its_bytes() -> None:
    cache = PostingCache(10_000)
    cache.put(1, "flow", "s1", _postings(list(range(100))), {})  # 1,400 bytes
    block = _postings([4096, 4097])
    cache.put_pending(1, "flow", "s1", 1, 3, block)
    assert cache.pending(1, "flow", "s1", 1, 3) is block
    assert cache.pending(1, "flow", "s1", 1, 4) is None  # a writer has changed the block since
    assert cache.pending(1, "flow", "s2", 1, 3) is None  # the fold has packed it since
    assert cache.room == 10_000 - 1_400 - block.nbytes
    cache.put_pending(1, "flow", "s2", 2, 1, block)  # not held under that signature: nothing kept
    assert cache.room == 10_000 - 1_400 - block.nbytes
    # Held again (after a fold): the blocks with deltas held before are gone with the old entry.
    cache.put(1, "flow", "s2", _postings(list(range(100))), {})
    assert cache.room == 10_000 - 1_400
    assert cache.pending(1, "flow", "s2", 1, 3) is None
