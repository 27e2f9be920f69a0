"""Textbook BM25 on every shared BEIR collection: the keyword reference that Ragline's BM25 is held to.

bm25s (Lucene's BM25: IDF ln(1 + (N - df + 0.5) / (df + 0.5)), k1 1.5, b 0.75) over whole
documents (title and text, as `benchmarks.beir` joins them), tokenised by bm25s: lower case,
words of two or more letters or digits, English stop words removed, Snowball English stemming.
Each query's top 100 is scored with ir-measures like `make eval`, so the two print the same
columns; the figures match `../shared/data/README.md`'s BM25 rows.

    .venv/bin/python tools/bm25_reference.py [--k1 1.5] [--b 0.75]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bm25s
import snowballstemmer

# tools/ is not a package: the shared loader is imported from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import beir

DEPTH = 100


def bm25_rankings(
    documents: list[beir.Document], queries: dict[str, str], k1: float = 1.5, b: float = 0.75
) -> dict[str, list[str]]:
    """Each query's top DEPTH document ids by bm25s, best first (ties as bm25s orders them)."""
    stem = snowballstemmer.stemmer("english").stemWords
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(
        bm25s.tokenize([d.text for d in documents], stemmer=stem, show_progress=False), show_progress=False
    )
    ids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in ids], stemmer=stem, show_progress=False)
    found, _ = retriever.retrieve(tokens, k=min(DEPTH, len(documents)), show_progress=False)
    return {query: [documents[int(i)].id for i in row] for query, row in zip(ids, found, strict=True)}


def main() -> None:
    """Prints each collection's textbook BM25 figures beside the data README's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k1", type=float, default=1.5)
    parser.add_argument("--b", type=float, default=0.75)
    args = parser.parse_args()
    for collection in beir.collections():
        rankings = bm25_rankings(collection.documents(), collection.queries(), args.k1, args.b)
        run = [doc for query, ids in rankings.items() for doc in beir.run_from_ranking(query, ids)]
        scores = beir.score(collection.qrels(), run)
        reference = collection.references().get("keyword", {})
        print(
            f"{collection.name}: "
            + ", ".join(
                f"{name} {value:.3f} (README {reference.get(name, float('nan')):.3f})"
                for name, value in scores.items()
            )
        )


if __name__ == "__main__":
    main()
