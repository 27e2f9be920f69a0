"""The Cranfield collection in ../shared/data/cranfield (BEIR layout), for benchmarks and evaluation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def shared_dir() -> Path:
    """The shared data folder: $RAGLINE_SHARED_DIR, or `shared/` beside the repository."""
    configured = os.environ.get("RAGLINE_SHARED_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared"


@dataclass(frozen=True)
class Document:
    """One abstract: its id and its title and text as one string."""

    id: str
    text: str


def documents() -> list[Document]:
    """The abstracts with any text, title first, in file order (a few of the 1,400 are empty)."""
    path = shared_dir() / "data" / "cranfield" / "corpus.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    docs = [Document(row["_id"], f"{row['title']}\n\n{row['text']}".strip()) for row in rows]
    return [doc for doc in docs if doc.text]


def queries() -> dict[str, str]:
    """The 225 queries by id."""
    path = shared_dir() / "data" / "cranfield" / "queries.jsonl"
    return {row["_id"]: row["text"] for row in map(json.loads, path.read_text().splitlines()) if row}
