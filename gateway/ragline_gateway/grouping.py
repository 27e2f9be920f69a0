"""Document-level grouping of Search results: one hit per document instead of one per chunk.

A document split into many chunks spreads its evidence over them, so its best chunk alone may
rank below a short document's only chunk. With RESULT_GROUPING_DOCUMENT a document scores its best
chunk's score plus `second_chunk_share` times its second-best chunk's (both among the retriever's
candidates), and is represented by its best chunk, carrying that document score. Ties keep the
retrieval order of the best chunks. Scores of every mode are higher-is-better, so the sum is
meaningful for BM25, cosine similarity and fused reciprocal ranks alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragline.v1 import common_pb2, gateway_service_pb2


def group_hits(
    hits: Sequence[common_pb2.SearchHit],
    grouping: gateway_service_pb2.ResultGrouping,
    second_chunk_share: float,
) -> list[common_pb2.SearchHit]:
    """The hits grouped as asked: unchanged for chunks, else one per document, best document first."""
    if grouping != gateway_service_pb2.RESULT_GROUPING_DOCUMENT:
        return list(hits)
    by_document: dict[str, list[common_pb2.SearchHit]] = {}
    for hit in hits:
        by_document.setdefault(hit.document_id, []).append(hit)
    grouped = []
    for chunks in by_document.values():
        scores = sorted((h.score for h in chunks), reverse=True)
        best = common_pb2.SearchHit()
        best.CopyFrom(max(chunks, key=lambda h: h.score))
        best.score = scores[0] + second_chunk_share * (scores[1] if len(scores) > 1 else 0.0)
        grouped.append(best)
    # sorted() is stable: equal scores keep the documents' order of first appearance.
    return sorted(grouped, key=lambda h: -h.score)
