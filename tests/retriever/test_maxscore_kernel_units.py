"""The compiled MaxScore kernel (`maxscore_kernel.py`) against scoring every posting in Python:
random postings with many exact ties (few distinct tf and length values), every k, and bounds
either exact or higher than any contribution (as the statistics give them)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from ragline_retriever import maxscore_kernel
from ragline_retriever.posting_cache import Held, Postings
from ragline_retriever.postings_arrays import NO_POSTINGS

K1_B, K1_B_AVGDL = 0.375, 0.5


def _every_posting(
    ids: list[np.ndarray], tfs: list[np.ndarray], dls: list[np.ndarray], weights: np.ndarray, k: int
) -> tuple[list[int], list[float]]:
    scores: dict[int, float] = {}
    for j in reversed(range(len(ids))):  # highest bound first, as the kernel adds them
        for chunk, tf, dl in zip(ids[j].tolist(), tfs[j].tolist(), dls[j].tolist(), strict=True):
            scores[chunk] = scores.get(chunk, 0.0) + weights[j] * tf / (tf + K1_B + K1_B_AVGDL * dl)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [chunk for chunk, _ in best], [score for _, score in best]


def _in_parts(
    rng: np.random.Generator, ids: list[np.ndarray], tfs: list[np.ndarray], dls: list[np.ndarray]
) -> list[list[Postings]]:
    """Each term's postings cut at random into one to four parts (some empty), as a search with
    blocks not yet folded hands them to the kernel."""
    terms = []
    for arrays in zip(ids, tfs, dls, strict=True):
        cuts = [
            0,
            *sorted(rng.integers(0, arrays[0].size + 1, int(rng.integers(0, 4))).tolist()),
            arrays[0].size,
        ]
        terms.append([Postings(*(a[x:y] for a in arrays)) for x, y in pairwise(cuts)])
    return terms


@pytest.mark.parametrize("exact_bounds", [False, True], ids=["statistics-bounds", "exact-bounds"])
def test_the_kernel_finds_what_scoring_every_posting_finds(exact_bounds: bool) -> None:
    rng = np.random.default_rng(int(exact_bounds))
    for case in range(150):
        terms, k, span = int(rng.integers(1, 6)), int(rng.integers(1, 12)), int(rng.integers(5, 400))
        ids = [np.sort(rng.choice(span, int(rng.integers(1, span)), replace=False)) for _ in range(terms)]
        tfs = [rng.integers(1, 4, a.size).astype(np.int16) for a in ids]
        dls = [rng.integers(1, 5, a.size).astype(np.int32) for a in ids]
        weights = rng.random(terms) + 0.1
        # Each term's bound: its best posting's contribution, or the largest tf with the least
        # length, as the statistics give it.
        bounds = weights * 3 / (3 + K1_B + K1_B_AVGDL * 1)
        if exact_bounds:
            bounds = np.array(
                [
                    float(np.max(w * t / (t + K1_B + K1_B_AVGDL * d)))
                    for w, t, d in zip(weights, tfs, dls, strict=True)
                ]
            )
        order = np.argsort(bounds)
        ids, tfs, dls = [ids[j] for j in order], [tfs[j] for j in order], [dls[j] for j in order]
        weights, bounds = weights[order], bounds[order]
        expected_ids, expected_scores = _every_posting(ids, tfs, dls, weights, k)
        terms = _in_parts(rng, ids, tfs, dls)
        found_ids, found_scores = maxscore_kernel.top_k(terms, weights, bounds, K1_B, K1_B_AVGDL, k)
        assert found_ids.tolist() == expected_ids, case
        assert found_scores.tolist() == pytest.approx(expected_scores, rel=1e-12), case


def _random_terms(
    rng: np.random.Generator, span: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
    terms = int(rng.integers(1, 6))
    ids = [np.sort(rng.choice(span, int(rng.integers(1, span)), replace=False)) for _ in range(terms)]
    tfs = [rng.integers(1, 4, a.size).astype(np.int16) for a in ids]
    dls = [rng.integers(1, 5, a.size).astype(np.int32) for a in ids]
    return ids, tfs, dls, rng.random(terms) + 0.1


def test_a_range_of_chunk_ids_is_ranked_as_if_its_postings_were_all() -> None:
    rng = np.random.default_rng(7)
    for case in range(100):
        ids, tfs, dls, weights = _random_terms(rng, int(rng.integers(5, 400)))
        low, high = sorted(int(x) for x in rng.integers(-5, 405, 2))
        inside = [(a >= low) & (a < high) for a in ids]
        k = int(rng.integers(1, 12))
        bounds = np.full(len(ids), 10.0)  # above any contribution: nothing is pruned on a bound's error
        expected = _every_posting(
            [a[m] for a, m in zip(ids, inside, strict=True)],
            [a[m] for a, m in zip(tfs, inside, strict=True)],
            [a[m] for a, m in zip(dls, inside, strict=True)],
            weights,
            k,
        )
        terms = _in_parts(rng, ids, tfs, dls)
        found = maxscore_kernel.top_k(terms, weights, bounds, K1_B, K1_B_AVGDL, k, low, high)
        assert found[0].tolist() == expected[0], case
        assert found[1].tolist() == pytest.approx(expected[1], rel=1e-12), case


@pytest.mark.parametrize("threads", [1, 2, 3])
async def test_a_ranking_split_over_threads_finds_what_scoring_every_posting_finds(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every part worth a thread, however few postings: the test's are small.
    monkeypatch.setattr(maxscore_kernel, "MIN_POSTINGS_PER_PART", 1)
    rng = np.random.default_rng(threads)
    for case in range(100):
        ids, tfs, dls, weights = _random_terms(rng, int(rng.integers(5, 400)))
        k = int(rng.integers(1, 12))
        # Held in parts, as a search that found blocks with deltas left holds them.
        held = [
            Held.of(Postings(*arrays)).replaced(parts, NO_POSTINGS)
            for arrays, parts in zip(
                zip(ids, tfs, dls, strict=True), _in_parts(rng, ids, tfs, dls), strict=True
            )
        ]
        ranking = maxscore_kernel.ranking(held, weights.tolist(), K1_B, K1_B_AVGDL, k, threads)
        assert len(ranking.parts) == min(threads, sum(a.size for a in ids))
        # The kernel adds contributions highest bound first: so does the reference, for equal sums.
        order = np.argsort([h.bound(w, K1_B, K1_B_AVGDL) for h, w in zip(held, weights, strict=True)])
        expected_ids, expected_scores = _every_posting(
            [ids[j] for j in order], [tfs[j] for j in order], [dls[j] for j in order], weights[order], k
        )
        found = await ranking.result()
        assert found.ids.tolist() == expected_ids, case
        assert found.scores.tolist() == pytest.approx(expected_scores, rel=1e-12), case
