"""The BEIR loader and scoring behind `make eval` and `make tune`, and the textbook BM25 reference tool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tool_scripts import load_tool

from benchmarks import beir

README = """# Evaluation data

## tiny/
Some words.

| system | nDCG@10 | Recall@100 | MRR@10 |
|---|---|---|---|
| BM25 (bm25s, English stop words, Snowball stemming) | 0.5 | 0.7 | 0.9 |
| all-MiniLM-L6-v2, exact cosine | 0.6 | 0.8 |  |
| reciprocal rank fusion of the two (k = 60) | 0.65 | 0.85 | 0.95 |

## other/
| system | nDCG@10 |
|---|---|
| BM25 | 0.1 |
"""
DOCUMENTS = {
    "d1": ("Boundary layers", "Laminar boundary-layer flow over a flat plate."),
    "d2": ("", "Heat transfer in supersonic flow."),
    "d3": ("", ""),
    "d4": ("Wings", "Swept wings at high speed; wing flutter."),
}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data folder with one BEIR collection, `tiny`, and a folder that is not one (no qrels)."""
    tiny = tmp_path / "tiny"
    (tiny / "qrels").mkdir(parents=True)
    (tiny / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in DOCUMENTS.items())
    )
    queries = {"q1": "boundary layer on a plate", "q2": "wing flutter", "q3": "unjudged"}
    (tiny / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    (tiny / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td4\t1\nq2\td2\t1\n")
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "corpus.jsonl").write_text("")
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def test_only_folders_in_beir_layout_are_collections(data: Path) -> None:
    assert [c.name for c in beir.collections(data)] == ["tiny"]


def test_documents_join_title_and_text_and_skip_empty_ones(data: Path) -> None:
    (collection,) = beir.collections(data)
    documents = collection.documents()
    assert [d.id for d in documents] == ["d1", "d2", "d4"]
    assert documents[0].text == "Boundary layers\n\nLaminar boundary-layer flow over a flat plate."
    assert documents[1].text == "Heat transfer in supersonic flow."


def test_queries_are_those_with_judgments(data: Path) -> None:
    (collection,) = beir.collections(data)
    assert collection.queries() == {"q1": "boundary layer on a plate", "q2": "wing flutter"}
    assert [(q.query_id, q.doc_id, q.relevance) for q in collection.qrels()] == [
        ("q1", "d1", 2),
        ("q2", "d4", 1),
        ("q2", "d2", 1),
    ]


def test_references_are_read_from_the_collections_own_section(data: Path) -> None:
    (collection,) = beir.collections(data)
    assert collection.references() == {
        "keyword": {"nDCG@10": 0.5, "Recall@100": 0.7, "MRR@10": 0.9},
        "vector": {"nDCG@10": 0.6, "Recall@100": 0.8},
        "hybrid": {"nDCG@10": 0.65, "Recall@100": 0.85, "MRR@10": 0.95},
    }
    assert beir.parse_references(README, "missing") == {}


def test_a_ranking_counts_each_document_once_at_its_first_hit(data: Path) -> None:
    (collection,) = beir.collections(data)
    run = beir.run_from_ranking("q1", ["d2", "d2", "d1", "d2"])
    assert [(s.doc_id, s.score) for s in run] == [("d2", 2.0), ("d1", 1.0)]
    perfect = beir.run_from_ranking("q1", ["d1"]) + beir.run_from_ranking("q2", ["d4", "d2"])
    assert beir.score(collection.qrels(), perfect) == pytest.approx(
        {"nDCG@10": 1.0, "Recall@100": 1.0, "MRR@10": 1.0}
    )
    # q1's only relevant document second: reciprocal rank 1/2 and nDCG 1/log2(3); q2 finds one of two at rank 1.
    scores = beir.score(collection.qrels(), run + beir.run_from_ranking("q2", ["d4"]))
    assert scores["MRR@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["Recall@100"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["nDCG@10"] == pytest.approx((1 / 1.5849625 + 1 / (1 + 1 / 1.5849625)) / 2, rel=1e-4)


def test_the_bm25_reference_stems_and_splits_hyphenated_words(data: Path) -> None:
    (collection,) = beir.collections(data)
    rankings = load_tool("bm25_reference").bm25_rankings(collection.documents(), collection.queries())
    # "boundary layer" matches "boundary-layer" and "layers" (Snowball stems); "wing" matches "wings".
    assert rankings["q1"][0] == "d1"
    assert rankings["q2"][0] == "d4"
