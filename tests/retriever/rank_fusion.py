"""Reciprocal rank fusion in Python: the reference the retriever's one-statement hybrid search is checked against."""

from __future__ import annotations

from ragline_retriever.search import Hit

# Reciprocal rank fusion constant from Cormack et al. (2009), also the retriever's default.
RRF_K = 60


def fuse(ranked_lists: list[tuple[list[Hit], float]], top_k: int, k: int = RRF_K) -> list[Hit]:
    """Weighted reciprocal rank fusion: each (list, weight) adds weight / (k + rank) to its chunks' scores.

    Ties keep the order in which chunks were first seen, so the earlier list wins them.
    """
    fused: dict[int, Hit] = {}
    for hits, weight in ranked_lists:
        for rank, hit in enumerate(hits, start=1):
            contribution = weight / (k + rank)
            seen = fused.get(hit.chunk_id)
            if seen is None:
                fused[hit.chunk_id] = Hit(
                    hit.chunk_id,
                    hit.document_id,
                    hit.ordinal,
                    hit.text,
                    hit.metadata,
                    contribution,
                    list(hit.modes),
                )
            else:
                seen.score += contribution
                seen.modes.extend(m for m in hit.modes if m not in seen.modes)
    return sorted(fused.values(), key=lambda h: -h.score)[:top_k]
