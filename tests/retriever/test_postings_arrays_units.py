"""The numpy parts of `bm25_top_k` (`postings_arrays.py`): per-chunk sums (dense and sorted), adding sums, the k best."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from ragline_retriever.postings_arrays import Scored, add, best, sum_by_chunk


def _reference(ids: list[np.ndarray], values: list[np.ndarray]) -> dict[int, float]:
    sums: dict[int, float] = defaultdict(float)
    for chunk_ids, chunk_values in zip(ids, values, strict=True):
        for chunk_id, value in zip(chunk_ids.tolist(), chunk_values.tolist(), strict=True):
            sums[chunk_id] += value
    return dict(sums)


@pytest.mark.parametrize("span", [500, 10**12], ids=["dense", "sorted"])
def test_sums_per_chunk_equal_a_plain_sum(span: int) -> None:
    rng = np.random.default_rng(span % 1000)
    ids = [np.sort(rng.choice(span, size, replace=False)).astype(np.int64) + 7 for size in (300, 40, 1)]
    values = [rng.random(a.size) + 0.01 for a in ids]
    found = sum_by_chunk(ids, values)
    expected = _reference(ids, values)
    assert found.ids.tolist() == sorted(expected)
    assert found.scores.tolist() == pytest.approx([expected[i] for i in sorted(expected)], rel=1e-12)


def test_dense_sums_start_from_zero_after_an_earlier_sum() -> None:
    # The dense arrays are kept between sums: what one sum set must not show in the next.
    first = [np.array([3, 5, 8], np.int64)]
    sum_by_chunk(first, [np.array([1.0, 2.0, 3.0])])
    found = sum_by_chunk([np.array([5, 6], np.int64)], [np.array([0.5, 0.25])])
    assert found.ids.tolist() == [5, 6]
    assert found.scores.tolist() == [0.5, 0.25]


def test_no_postings_sum_to_nothing() -> None:
    assert sum_by_chunk([], []).ids.size == 0
    assert sum_by_chunk([np.zeros(0, np.int64)], [np.zeros(0)]).ids.size == 0


def test_adding_sums_of_some_chunks() -> None:
    scored = Scored(np.array([2, 5, 9], np.int64), np.array([1.0, 2.0, 3.0]))
    more = Scored(np.array([5, 9], np.int64), np.array([0.5, 0.25]))
    assert add(scored, more).scores.tolist() == [1.0, 2.5, 3.25]
    assert scored.scores.tolist() == [1.0, 2.0, 3.0]  # not changed in place


def test_the_best_come_first_with_ties_broken_by_chunk_id() -> None:
    scored = Scored(np.array([1, 2, 3, 4, 5, 6], np.int64), np.array([0.5, 2.0, 1.0, 2.0, 1.0, 0.1]))
    top = best(scored, 4)
    assert top.ids.tolist() == [2, 4, 3, 5]
    assert top.scores.tolist() == [2.0, 2.0, 1.0, 1.0]
    assert best(scored, 10).ids.tolist() == [2, 4, 3, 5, 1, 6]
