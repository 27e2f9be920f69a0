"""The compiled MaxScore kernel (`maxscore_kernel.py`) against scoring every posting in Python:
random postings with many exact ties (few distinct tf and length values), every k, and bounds
either exact or higher than any contribution (as the statistics give them)."""

from __future__ import annotations

import numpy as np
import pytest

from ragline_retriever import maxscore_kernel

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
        found_ids, found_scores = maxscore_kernel.top_k(ids, tfs, dls, weights, bounds, K1_B, K1_B_AVGDL, k)
        assert found_ids.tolist() == expected_ids, case
        assert found_scores.tolist() == pytest.approx(expected_scores, rel=1e-12), case
