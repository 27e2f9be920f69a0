"""The shared test collections in ../shared/data (BEIR layout), their reference figures, and scoring.

A collection is a folder with `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
`text`) and `qrels/test.tsv` (`query-id`, `corpus-id`, `score`, with a header line); folders
without all three (e.g. squad-dev) are not retrieval collections and are skipped. The reference
figures are read from the tables of `../shared/data/README.md`, one section per collection.
Rankings are scored with `ir-measures` (trec_eval semantics).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures
from ir_measures import RR, R, nDCG

MEASURES = [nDCG @ 10, R @ 100, RR @ 10]
MEASURE_NAMES = {nDCG @ 10: "nDCG@10", R @ 100: "Recall@100", RR @ 10: "MRR@10"}
# Which search mode each reference row of the data README is the counterpart of, by its wording.
REFERENCE_MODES = {"bm25": "keyword", "minilm": "vector", "fusion": "hybrid"}


def shared_dir() -> Path:
    """The shared data folder: $RAGLINE_SHARED_DIR, or `shared/` beside the repository."""
    configured = os.environ.get("RAGLINE_SHARED_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared"


@dataclass(frozen=True)
class Document:
    """One document: its id and its title and text as one string."""

    id: str
    text: str


@dataclass(frozen=True)
class Collection:
    """One BEIR collection on disk."""

    path: Path

    @property
    def name(self) -> str:
        """The collection's folder name, e.g. `cranfield`."""
        return self.path.name

    def documents(self) -> list[Document]:
        """The documents with any text, title first, in file order (empty ones are left out)."""
        rows = read_jsonl(self.path / "corpus.jsonl")
        docs = [Document(row["_id"], f"{row.get('title', '')}\n\n{row['text']}".strip()) for row in rows]
        return [doc for doc in docs if doc.text]

    def queries(self) -> dict[str, str]:
        """The queries by id, only those with judgments."""
        judged = {qrel.query_id for qrel in self.qrels()}
        return {
            row["_id"]: row["text"] for row in read_jsonl(self.path / "queries.jsonl") if row["_id"] in judged
        }

    def qrels(self) -> list[ir_measures.Qrel]:
        """The graded judgments of `qrels/test.tsv` (its header line skipped)."""
        return load_qrels(self.path / "qrels" / "test.tsv")

    def references(self) -> dict[str, dict[str, float]]:
        """The data README's reference figures for this collection, by search mode."""
        return parse_references((self.path.parent / "README.md").read_text(), self.name)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, one a line (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_collection(path: Path) -> bool:
    """Whether a folder holds a BEIR retrieval collection (corpus, queries and test judgments)."""
    return all((path / name).is_file() for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"))


def collections(data: Path | None = None) -> list[Collection]:
    """Every BEIR collection in the shared data folder, by name."""
    root = data or shared_dir() / "data"
    return [Collection(path) for path in sorted(root.iterdir()) if path.is_dir() and is_collection(path)]


def load(name: str) -> Collection:
    """The shared collection `name` (FileNotFoundError if there is none)."""
    path = shared_dir() / "data" / name
    if not is_collection(path):
        raise FileNotFoundError(f"{path} is not a BEIR collection")
    return Collection(path)


def load_qrels(path: Path) -> list[ir_measures.Qrel]:
    """The judgments of a BEIR qrels file (with its header line)."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return [ir_measures.Qrel(query, doc, int(score)) for query, doc, score in rows]


def parse_references(readme: str, name: str) -> dict[str, dict[str, float]]:
    """The figures of the first table under the README heading `## <name>/`, by search mode.

    The table's header names the measures; a row is matched to a mode by REFERENCE_MODES.
    """
    section = re.split(r"^## ", readme, flags=re.MULTILINE)
    body = next((s for s in section if s.startswith(f"{name}/")), "")
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in body.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    if not rows:
        return {}
    header, references = rows[0], {}
    for row in rows[1:]:
        mode = next((m for word, m in REFERENCE_MODES.items() if word in row[0].lower()), None)
        if mode is not None:
            references[mode] = {h: float(v) for h, v in zip(header[1:], row[1:], strict=True) if v}
    return references


def run_from_ranking(query_id: str, document_ids: Iterable[str]) -> list[ir_measures.ScoredDoc]:
    """A query's ranking as scored documents, each document once at its first (best) position."""
    ranked = list(dict.fromkeys(document_ids))
    # Scores that decrease with rank, so trec_eval's sort by score keeps our order exactly.
    return [ir_measures.ScoredDoc(query_id, doc, float(len(ranked) - i)) for i, doc in enumerate(ranked)]


def score(qrels: Sequence[ir_measures.Qrel], run: Sequence[ir_measures.ScoredDoc]) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 of a run, averaged over the judged queries."""
    scores = ir_measures.calc_aggregate(MEASURES, qrels, run)
    return {MEASURE_NAMES[m]: float(scores[m]) for m in MEASURES}
