"""Token-aware chunking: splits a document into pieces the embedder can read whole.

Chunks are measured in `cl100k_base` tokens (tiktoken), so the size setting means the
same thing for every embedding model. Text is split at the largest natural boundary that
fits: paragraphs, then sentences, then (for a run-on sentence) raw tokens. Neighbouring
chunks share up to `overlap` tokens of whole sentences, so a fact that straddles a
boundary is still found in one piece. Boundaries depend only on nearby text, so a small
edit changes only the chunks around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ragline.tokens import get_encoding

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document."""

    text: str
    """The chunk's text."""
    token_count: int
    """The chunk's length in cl100k_base tokens."""


def _pieces(text: str, size: int) -> list[tuple[str, int]]:
    """Splits text into (piece, tokens) units no longer than `size` tokens, in order."""
    encoding = get_encoding()
    units: list[tuple[str, int]] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        tokens = len(encoding.encode(paragraph))
        if tokens <= size:
            units.append((paragraph, tokens))
            continue
        for sentence in _SENTENCE.split(paragraph):
            ids = encoding.encode(sentence)
            if len(ids) <= size:
                units.append((sentence, len(ids)))
                continue
            # A sentence longer than a whole chunk: cut it by tokens, the only boundary left.
            for start in range(0, len(ids), size):
                window = ids[start : start + size]
                units.append((encoding.decode(window), len(window)))
    return units


def chunk_text(text: str, size: int, overlap: int) -> list[Chunk]:
    """Splits `text` into chunks of at most about `size` tokens sharing up to `overlap` tokens."""
    if overlap >= size:
        raise ValueError(f"overlap ({overlap}) must be smaller than size ({size})")
    chunks: list[Chunk] = []
    current: list[tuple[str, int]] = []
    current_tokens = 0
    for piece, tokens in _pieces(text, size):
        if current and current_tokens + tokens > size:
            chunks.append(_join(current))
            # Carry whole trailing pieces into the next chunk while they fit the overlap budget.
            carried: list[tuple[str, int]] = []
            carried_tokens = 0
            for prev in reversed(current):
                if carried_tokens + prev[1] > overlap or carried_tokens + prev[1] + tokens > size:
                    break
                carried.insert(0, prev)
                carried_tokens += prev[1]
            current, current_tokens = carried, carried_tokens
        current.append((piece, tokens))
        current_tokens += tokens
    if current:
        chunks.append(_join(current))
    return chunks


def _join(pieces: list[tuple[str, int]]) -> Chunk:
    text = " ".join(piece for piece, _ in pieces)
    return Chunk(text=text, token_count=len(get_encoding().encode(text)))
