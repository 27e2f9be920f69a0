"""Document-level grouping of Search hits: one hit per document, its best chunk plus a share of the next."""

from __future__ import annotations

import pytest

from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw
from ragline_gateway.grouping import group_hits


def hit(chunk: str, document: str, score: float) -> common_pb2.SearchHit:
    return common_pb2.SearchHit(chunk_id=chunk, document_id=document, score=score)


# A long document "long" whose evidence is split over two chunks, and a short one with one chunk.
HITS = [hit("s1", "short", 0.9), hit("l1", "long", 0.8), hit("l2", "long", 0.5), hit("o1", "other", 0.1)]


def test_chunk_grouping_leaves_the_hits_as_they_are() -> None:
    assert group_hits(HITS, gw.RESULT_GROUPING_CHUNK, 0.0) == HITS
    assert group_hits(HITS, gw.RESULT_GROUPING_UNSPECIFIED, 0.0) == HITS


def test_documents_rank_by_their_best_chunk_without_a_share() -> None:
    grouped = group_hits(HITS, gw.RESULT_GROUPING_DOCUMENT, 0.0)
    assert [(h.document_id, h.chunk_id) for h in grouped] == [
        ("short", "s1"),
        ("long", "l1"),
        ("other", "o1"),
    ]
    assert [h.score for h in grouped] == pytest.approx([0.9, 0.8, 0.1])


def test_a_share_of_the_second_chunk_lifts_a_document_whose_evidence_is_split() -> None:
    grouped = group_hits(HITS, gw.RESULT_GROUPING_DOCUMENT, 0.5)
    # long: 0.8 + 0.5 * 0.5 = 1.05 > short's 0.9; the hit is long's best chunk, with the document's score.
    assert [(h.document_id, h.chunk_id) for h in grouped] == [
        ("long", "l1"),
        ("short", "s1"),
        ("other", "o1"),
    ]
    assert [h.score for h in grouped] == pytest.approx([1.05, 0.9, 0.1])
    # The retriever's hits are not changed.
    assert HITS[1].score == pytest.approx(0.8)


def test_the_best_chunk_represents_its_document_wherever_it_comes() -> None:
    hits = [hit("a2", "a", 0.3), hit("b1", "b", 0.6), hit("a1", "a", 0.7)]
    grouped = group_hits(hits, gw.RESULT_GROUPING_DOCUMENT, 0.25)
    assert [(h.document_id, h.chunk_id) for h in grouped] == [("a", "a1"), ("b", "b1")]
    assert grouped[0].score == pytest.approx(0.7 + 0.25 * 0.3)
