"""The compiled MaxScore kernel (`maxscore_kernel.py`) against scoring every posting in Python:
random postings with many exact ties (few distinct tf and length values), every k, and a starting
threshold of 0, of some fraction of the k-th best score, or of exactly that score."""

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


@pytest.mark.parametrize("start", ["zero", "below", "exact"])
def test_the_kernel_finds_what_scoring_every_posting_finds(start: str) -> None:
    rng = np.random.default_rng(["zero", "below", "exact"].index(start))
    for case in range(150):
        terms, k, span = int(rng.integers(1, 6)), int(rng.integers(1, 12)), int(rng.integers(5, 400))
        ids = [np.sort(rng.choice(span, int(rng.integers(1, span)), replace=False)) for _ in range(terms)]
        tfs = [rng.integers(1, 4, a.size).astype(np.int16) for a in ids]
        dls = [rng.integers(1, 5, a.size).astype(np.int32) for a in ids]
        weights = rng.random(terms) + 0.1
        # Each term's bound: its largest tf with the least length, as the statistics give it.
        bounds = weights * 3 / (3 + K1_B + K1_B_AVGDL * 1)
        order = np.argsort(bounds)
        ids, tfs, dls = [ids[j] for j in order], [tfs[j] for j in order], [dls[j] for j in order]
        weights, bounds = weights[order], bounds[order]
        expected_ids, expected_scores = _every_posting(ids, tfs, dls, weights, k)
        kth = expected_scores[-1] if len(expected_scores) == k else 0.0
        theta = {"zero": 0.0, "below": kth * rng.random(), "exact": kth}[start]
        found_ids, found_scores = maxscore_kernel.top_k(
            ids, tfs, dls, weights, bounds, K1_B, K1_B_AVGDL, k, theta
        )
        assert found_ids.tolist() == expected_ids, case
        assert found_scores.tolist() == pytest.approx(expected_scores, rel=1e-12), case
