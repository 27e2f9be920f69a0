"""Token-aware chunking: splits a document into pieces the embedder can read whole.

Chunks are measured in `cl100k_base` tokens (tiktoken), so the size setting means the
same thing for every embedding model. Splitting is recursive: sections (a heading's text,
a PDF page) are never mixed; within one, text is cut at the largest natural boundary that
fits: paragraphs, then sentences, then (for a run-on sentence) raw tokens.

Those pieces are grouped into chunks by their content, not their position: every piece
starts alone, and the boundaries between pieces are visited from the weakest to the
strongest, merging the two sides whenever they fit in one chunk. Which boundaries survive
depends only on the text around them, so an edit that adds or removes words changes the
chunk it falls in and rarely a neighbour, where greedy packing would shift every later
boundary (and so every later chunk's hash, and its embedding). Neighbouring chunks then
share up to `overlap` tokens of whole trailing pieces, so a fact that straddles a boundary
is still found in one piece.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ragline.tokens import get_encoding
from ragline_gateway.formats import JsonValue, Section

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
# Boundaries by strength: a cut inside a sentence, a sentence break, a paragraph break.
_SEPARATOR_RANK = {"": 0, " ": 1, "\n\n": 2}
# Joining two pieces may cost a token (a blank line is one), counted so no chunk exceeds its size.
_SEPARATOR_TOKENS = 1


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document."""

    text: str
    """The chunk's text."""
    token_count: int
    """The chunk's length in cl100k_base tokens."""
    metadata: Mapping[str, JsonValue] = field(default_factory=dict)
    """The metadata of the section the chunk comes from: its heading path or page."""


@dataclass(frozen=True)
class _Piece:
    text: str
    tokens: int
    separator: str
    """What joins the piece to one before it: a blank line, a space, or nothing inside a cut sentence."""


def _pieces(text: str, budget: int) -> list[_Piece]:
    """Splits text into pieces no longer than `budget` tokens, in order."""
    encoding = get_encoding()
    pieces: list[_Piece] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        tokens = len(encoding.encode(paragraph))
        if tokens <= budget:
            pieces.append(_Piece(paragraph, tokens, "\n\n"))
            continue
        separator = "\n\n"
        for sentence in _SENTENCE.split(paragraph):
            ids = encoding.encode(sentence)
            # A sentence longer than a whole chunk is cut by tokens, the only boundary left.
            for start in range(0, len(ids), budget):
                window = ids[start : start + budget]
                pieces.append(_Piece(encoding.decode(window), len(window), separator if start == 0 else ""))
            separator = " "
    return pieces


def _strength(pieces: list[_Piece], boundary: int) -> tuple[int, float]:
    """How strongly the text wants a chunk boundary after `pieces[boundary]`; weakest merge first.

    Paragraph breaks outrank sentence breaks, which outrank cuts inside a sentence; among equals
    a hash of the piece before the boundary decides, so the order depends on content alone.
    """
    digest = hashlib.blake2b(pieces[boundary].text.encode(), digest_size=8).digest()
    return _SEPARATOR_RANK[pieces[boundary + 1].separator], int.from_bytes(digest) / 2**64


def _groups(pieces: list[_Piece], budget: int) -> list[list[_Piece]]:
    """Groups consecutive pieces into chunks of at most `budget` tokens, merging across weak boundaries first.

    Every piece starts as its own group; boundaries are visited from weakest to strongest and
    the two groups beside one merge when they fit the budget together. Which boundaries survive
    depends on the content around them, not on where the section starts.
    """
    first = list(range(len(pieces)))  # union-find: the first piece of each piece's group
    tokens = [p.tokens for p in pieces]  # a group's size, kept at its first piece

    def group_of(i: int) -> int:
        while first[i] != i:
            first[i] = first[first[i]]
            i = first[i]
        return i

    for boundary in sorted(range(len(pieces) - 1), key=lambda b: _strength(pieces, b)):
        # The group right of a boundary not yet merged starts just after it.
        left, right = group_of(boundary), boundary + 1
        if tokens[left] + _SEPARATOR_TOKENS + tokens[right] <= budget:
            first[right] = left
            tokens[left] += _SEPARATOR_TOKENS + tokens[right]
    groups: list[list[_Piece]] = []
    for i, piece in enumerate(pieces):
        if group_of(i) == i:
            groups.append([])
        groups[-1].append(piece)
    return groups


def chunk_text(
    text: str, size: int, overlap: int, metadata: Mapping[str, JsonValue] | None = None
) -> list[Chunk]:
    """Splits `text` into chunks of at most about `size` tokens sharing up to `overlap` tokens."""
    if overlap >= size:
        raise ValueError(f"overlap ({overlap}) must be smaller than size ({size})")
    # Each chunk's own text leaves room for the overlap carried from the one before it.
    budget = size - overlap
    chunks: list[Chunk] = []
    previous: list[_Piece] = []
    for group in _groups(_pieces(text, budget), budget):
        carried: list[_Piece] = []
        carried_tokens = 0
        for piece in reversed(previous):
            if carried_tokens + piece.tokens + _SEPARATOR_TOKENS > overlap:
                break
            carried.insert(0, piece)
            carried_tokens += piece.tokens + _SEPARATOR_TOKENS
        chunks.append(_join(carried + group, metadata or {}))
        previous = group
    return chunks


def chunk_sections(sections: Iterable[Section], size: int, overlap: int) -> list[Chunk]:
    """Chunks each section on its own; every chunk carries its section's metadata."""
    return [chunk for s in sections for chunk in chunk_text(s.text, size, overlap, s.metadata)]


def _join(pieces: list[_Piece], metadata: Mapping[str, JsonValue]) -> Chunk:
    text = pieces[0].text + "".join(p.separator + p.text for p in pieces[1:])
    return Chunk(text=text, token_count=len(get_encoding().encode(text)), metadata=metadata)
