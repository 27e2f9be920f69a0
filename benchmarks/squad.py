"""SQuAD v1.1 dev data in ../shared/data/squad-dev and its official answer metrics, for `make eval-answers`.

The normalisation is the official SQuAD v1.1 evaluation script's: lowercase, punctuation removed,
the articles a/an/the removed, whitespace collapsed. `[n]` citation markers are removed from an
answer before it is scored (../shared/data/README.md).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

from benchmarks.beir import read_jsonl, shared_dir

_MARKER = re.compile(r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


@dataclass(frozen=True)
class Question:
    """One question: its id, text, gold answers and the paragraph it was written on."""

    id: str
    text: str
    answers: list[str]
    doc_id: str


def paragraphs() -> dict[str, str]:
    """Every paragraph of the corpus by its id, in file order."""
    path = shared_dir() / "data" / "squad-dev" / "corpus.jsonl"
    return {row["_id"]: row["text"] for row in read_jsonl(path)}


def questions() -> list[Question]:
    """The questions in file order (any prefix spreads over all the articles)."""
    path = shared_dir() / "data" / "squad-dev" / "questions.jsonl"
    return [Question(r["id"], r["question"].strip(), r["answers"], r["doc_id"]) for r in read_jsonl(path)]


def normalize(text: str) -> str:
    """The official SQuAD v1.1 normalisation, after removing `[n]` markers."""
    text = "".join(c for c in _MARKER.sub(" ", text).lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(answer: str, golds: list[str]) -> float:
    """1.0 when the normalised answer equals a normalised gold answer."""
    return float(any(normalize(answer) == normalize(gold) for gold in golds))


def token_f1(answer: str, golds: list[str]) -> float:
    """The best bag-of-words F1 of the normalised answer against a gold answer."""
    tokens = normalize(answer).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize(gold).split()
        common = sum((Counter(tokens) & Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(tokens), common / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_gold(answer: str, golds: list[str]) -> float:
    """1.0 when the normalised answer holds a normalised gold answer as whole words (the lenient measure)."""
    padded = f" {normalize(answer)} "
    return float(any(f" {normalize(gold)} " in padded for gold in golds if normalize(gold)))
